// llserver is the yardstick of the FUSE benchmarks: a minimal libfuse3
// low-level server, multi-threaded with cloned descriptors, serving the
// same file semantics as a sever attribute: /value, read-only, a page
// long, read with direct I/O, "1\n" at offset 0; poll reports
// POLLPRI|POLLERR once notified since the open's last read (as
// sysfs_notify), POLLERR|POLLHUP once "unplugged". Commands on stdin, one
// a line: "n" notifies, "u" unplugs, "r" makes the file live again; each
// prints the CLOCK_MONOTONIC nanoseconds just before it wakes the poller.
//
//	llserver MOUNTPOINT
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct fuse_pollhandle *ph; // the last poller's wake-up handle
static unsigned long long seq;     // notifications so far
static int gone;                   // unplugged

struct open { unsigned long long seen; };

static void stat_of(fuse_ino_t ino, struct stat *st) {
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	if (ino == 1) { st->st_mode = S_IFDIR | 0755; st->st_nlink = 2; }
	else { st->st_mode = S_IFREG | 0444; st->st_nlink = 1; st->st_size = 4096; }
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
	if (parent != 1 || strcmp(name, "value") != 0) { fuse_reply_err(req, ENOENT); return; }
	struct fuse_entry_param e = {0};
	e.ino = 2; e.attr_timeout = 3600; e.entry_timeout = 60;
	stat_of(2, &e.attr);
	fuse_reply_entry(req, &e);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	struct stat st; stat_of(ino, &st);
	fuse_reply_attr(req, &st, 3600);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	if (ino != 2) { fuse_reply_err(req, EISDIR); return; }
	struct open *o = malloc(sizeof *o);
	pthread_mutex_lock(&mu); o->seen = seq; pthread_mutex_unlock(&mu);
	fi->fh = (uint64_t)(uintptr_t)o;
	fi->direct_io = 1; fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
	struct open *o = (struct open *)(uintptr_t)fi->fh;
	pthread_mutex_lock(&mu);
	int dead = gone; o->seen = seq;
	pthread_mutex_unlock(&mu);
	if (dead) { fuse_reply_err(req, ENODEV); return; }
	static const char text[] = "1\n";
	if (off >= 2) { fuse_reply_buf(req, NULL, 0); return; }
	fuse_reply_buf(req, text + off, size < 2 - off ? size : 2 - off);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	free((void *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void ll_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct fuse_pollhandle *p) {
	struct open *o = (struct open *)(uintptr_t)fi->fh;
	unsigned rev = 0;
	pthread_mutex_lock(&mu);
	if (gone) rev = POLLERR | POLLHUP;
	else if (seq > o->seen) rev = POLLPRI | POLLERR;
	if (p) { if (ph) fuse_pollhandle_destroy(ph); ph = p; }
	pthread_mutex_unlock(&mu);
	fuse_reply_poll(req, rev);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
	char buf[256]; size_t n = 0; struct stat st;
	if (off < 1) { stat_of(2, &st); n += fuse_add_direntry(req, buf + n, sizeof buf - n, "value", &st, 1); }
	fuse_reply_buf(req, buf, n < size ? n : size);
}

static long long now(void) {
	struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *commands(void *se) {
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		pthread_mutex_lock(&mu);
		if (line[0] == 'n') seq++;
		else if (line[0] == 'u') gone = 1;
		else if (line[0] == 'r') { gone = 0; }
		struct fuse_pollhandle *p = ph; ph = NULL;
		pthread_mutex_unlock(&mu);
		long long t = now();
		if (p) { fuse_lowlevel_notify_poll(p); fuse_pollhandle_destroy(p); }
		printf("%lld\n", t); fflush(stdout);
	}
	fuse_session_exit(se);
	return NULL;
}

int main(int argc, char **argv) {
	if (argc != 2) { fprintf(stderr, "usage: llserver MOUNTPOINT\n"); return 2; }
	static const struct fuse_lowlevel_ops ops = {
		.lookup = ll_lookup, .getattr = ll_getattr, .open = ll_open, .read = ll_read,
		.release = ll_release, .poll = ll_poll, .readdir = ll_readdir,
	};
	char *fargv[] = {argv[0], "-o", "default_permissions,fsname=llserver", NULL};
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
	if (!se || fuse_session_mount(se, argv[1]) != 0) return 1;
	printf("mounted\n"); fflush(stdout);
	pthread_t t; pthread_create(&t, NULL, commands, se);
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	int rc = fuse_session_loop_mt(se, cfg);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	return rc ? 1 : 0;
}
