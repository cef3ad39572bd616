// loop is the process side of the FUSE benchmarks.
//
//	loop orc PATH N   N cycles of open, read 4096, close; prints ns per cycle
//	loop poll         per line on stdin, a path: open it, read (arms, as
//	                  sysfs asks), print "armed", poll POLLPRI|POLLERR,
//	                  print the CLOCK_MONOTONIC ns at wake-up, poll's
//	                  result and the revents, close
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
	struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
	char buf[4096];
	if (argc == 4 && strcmp(argv[1], "orc") == 0) {
		long n = atol(argv[3]);
		long long t = now();
		for (long i = 0; i < n; i++) {
			int fd = open(argv[2], O_RDONLY);
			if (fd < 0 || read(fd, buf, sizeof buf) < 0) { perror(argv[2]); return 1; }
			close(fd);
		}
		printf("%lld\n", (now() - t) / (n ? n : 1));
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "poll") == 0) {
		char line[4096];
		while (fgets(line, sizeof line, stdin)) {
			line[strcspn(line, "\n")] = 0;
			int fd = open(line, O_RDONLY);
			if (fd < 0) { perror(line); return 1; }
			read(fd, buf, sizeof buf);
			printf("armed\n"); fflush(stdout);
			struct pollfd p = {fd, POLLPRI | POLLERR, 0};
			int r = poll(&p, 1, 10000);
			long long t = now();
			printf("%lld %d %d\n", t, r, p.revents); fflush(stdout);
			close(fd);
		}
		return 0;
	}
	fprintf(stderr, "usage: loop orc PATH N | loop poll\n");
	return 2;
}
