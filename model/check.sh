#!/usr/bin/env bash
# check.sh -- check model/active.pml (the Active protocol of active.go)
# exhaustively with spin, in every configuration below, and require spin to
# find the error in every deliberately broken variant.
#
# Usage: model/check.sh [-j JOBS] [--deep] [-v]
#   -j JOBS  pan runs at once (default 2)
#   --deep   also run five larger configurations (18M states and more,
#            1.5 GB and more each; many more minutes)
#   -v       print the counterexample trail of each broken variant
#
# Every run is a full (non-bitstate) state-space search for assertion
# violations and invalid end states, compiled with -DSAFETY -DNOREDUCE: no
# partial-order reduction, no hash compaction, no bitstate hashing.
# Exits non-zero if any correct configuration fails, if any broken variant
# passes, or if a run could not complete.  Works from any directory; build
# outputs go to a temporary directory that is removed afterwards.
set -euo pipefail

jobs=2
deep=0
verbose=0
while [ $# -gt 0 ]; do
	case $1 in
	-j) jobs=$2; shift 2 ;;
	-j*) jobs=${1#-j}; shift ;;
	--deep) deep=1; shift ;;
	-v) verbose=1; shift ;;
	-h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "check.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=$here/active.pml
for tool in spin gcc; do
	command -v "$tool" >/dev/null || { echo "check.sh: $tool not found" >&2; exit 2; }
done
[ -f "$model" ] || { echo "check.sh: $model not found" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sever-model.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# name | expect | defines | pan hash-table size (log2)
# expect: ok = no error; assert / end = pan must report an assertion
# violation / an invalid end state.
runs=(
	"base          |ok    |NACC=2 NITER=2 NSEV=1 NSELF=1|24"
	"acc3          |ok    |NACC=3 NITER=1 NSEV=1 NSELF=0|24"
	"iter3         |ok    |NACC=2 NITER=3 NSEV=1 NSELF=1|24"
	"shard1        |ok    |NSHARD=1 SPS=3 NACC=2 NITER=2 NSEV=1 NSELF=1|24"
	"shard3        |ok    |NSHARD=3 SPS=1 NACC=2 NITER=2 NSEV=1 NSELF=1|24"
	"self2         |ok    |NACC=2 NITER=2 NSEV=0 NSELF=2|24"
	"self2+sev     |ok    |NSHARD=3 SPS=1 NACC=1 NITER=2 NSEV=1 NSELF=2|24"
	"sev2          |ok    |NACC=2 NITER=2 NSEV=2 NSELF=0|24"
	"sev2+self     |ok    |NSHARD=3 SPS=1 NACC=2 NITER=1 NSEV=2 NSELF=1|24"
	"stale         |ok    |NACC=2 NITER=1 NSEV=1 NSELF=0 NSTALE=1|24"
	"stale+self    |ok    |NACC=1 NITER=1 NSEV=1 NSELF=1 NSTALE=1|24"
	"gen-sev2      |ok    |GEN=256 NACC=2 NITER=2 NSEV=2 NSELF=0|24"
	"BUG_CHECK_BEFORE_INC |assert|BUG_CHECK_BEFORE_INC NACC=2 NITER=2 NSEV=1 NSELF=1|22"
	"BUG_NO_SETTLE_ON_EXIT|end   |BUG_NO_SETTLE_ON_EXIT NACC=2 NITER=2 NSEV=1 NSELF=1|22"
	"BUG_NO_SETTLE_ON_FAIL|end   |BUG_NO_SETTLE_ON_FAIL NACC=2 NITER=2 NSEV=1 NSELF=1|22"
	"BUG_SETTLE_NO_CAS    |assert|BUG_SETTLE_NO_CAS NACC=2 NITER=2 NSEV=1 NSELF=1|22"
	"BUG_EXIT_ADD         |assert|BUG_EXIT_ADD NACC=2 NITER=1 NSEV=1 NSELF=0 NSTALE=1|22"
)
if [ "$deep" = 1 ]; then
	runs+=(
		"deep-acc3+self|ok    |NACC=3 NITER=1 NSEV=1 NSELF=1|26"
		"deep-self2+sev|ok    |NACC=2 NITER=1 NSEV=1 NSELF=2|26"
		"deep-sev2+self|ok    |NACC=2 NITER=2 NSEV=2 NSELF=1|26"
		"deep-stale+self|ok   |NACC=1 NITER=2 NSEV=1 NSELF=1 NSTALE=1|26"
		"deep-gen-base |ok    |GEN=256 NACC=2 NITER=2 NSEV=1 NSELF=1|26"
	)
fi

trim() { local s=$1; s=${s#"${s%%[! ]*}"}; s=${s%"${s##*[! ]}"}; printf '%s' "$s"; }

# run_one INDEX: build and run one configuration in $tmp/INDEX; writes
# $tmp/INDEX/line (the summary) and $tmp/INDEX/status (0 = as required).
run_one() {
	local idx=$1 spec=${runs[$1]}
	local name expect defs wsize dir
	IFS='|' read -r name expect defs wsize <<<"$spec"
	name=$(trim "$name"); expect=$(trim "$expect"); defs=$(trim "$defs"); wsize=$(trim "$wsize")
	dir=$tmp/$idx
	mkdir -p "$dir"
	cp "$model" "$dir/active.pml"
	local dflags=() d
	for d in $defs; do dflags+=("-D$d"); done
	local status=1 line
	(
		cd "$dir"
		start=$(date +%s.%N)
		if ! spin -a "${dflags[@]}" active.pml >spin.out 2>&1 || [ ! -f pan.c ]; then
			echo "FAIL  $(printf '%-22s' "$name") spin -a failed: $(tr '\n' ' ' <spin.out)"
			exit 1
		fi
		# The default runs are small enough that compiling pan dominates:
		# -O0 is faster overall there; the --deep runs use -O2.
		opt=-O0
		[ "$wsize" -ge 26 ] && opt=-O2
		if ! gcc "$opt" -w -DSAFETY -DNOREDUCE -o pan pan.c >gcc.out 2>&1; then
			echo "FAIL  $(printf '%-22s' "$name") gcc failed: $(head -c 400 gcc.out | tr '\n' ' ')"
			exit 1
		fi
		set +e
		./pan -m1000000 -w"$wsize" >pan.out 2>&1
		rc=$?
		set -e
		end=$(date +%s.%N)
		secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
		states=$(awk '/states, stored/ { print $1; exit }' pan.out)
		trans=$(awk '/transitions \(= stored\+matched\)/ { print $1; exit }' pan.out)
		errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' pan.out | head -1)
		first=$(grep -m1 -E '^pan:[0-9]+:' pan.out || true)
		: "${states:=?}" "${trans:=?}" "${errors:=?}"
		what="$(printf '%-22s' "$name") $(printf '%-46s' "$defs") states=$states transitions=$trans time=${secs}s"
		incomplete=$(grep -m1 -iE 'max search depth too small|out of memory|aborted|bitstate|hash-compact' pan.out || true)
		if ! grep -q 'Full statespace search' pan.out; then
			incomplete="not a full state-space search"
		fi
		case $expect in
		ok)
			if [ "$rc" -eq 0 ] && [ "$errors" = 0 ] && [ -z "$first" ] && [ -z "$incomplete" ]; then
				echo "ok    $what"
				exit 0
			fi
			echo "FAIL  $what errors=$errors rc=$rc ${first}${incomplete:+ [$incomplete]}"
			if [ -n "$first" ]; then
				echo "      counterexample (spin -t):"
				spin -t "${dflags[@]}" -p -g -l active.pml 2>&1 | sed 's/^/      /' | tail -n 120
			fi
			exit 1
			;;
		assert|end)
			want="assertion violated"
			[ "$expect" = end ] && want="invalid end state"
			if [ "$errors" != "?" ] && [ "$errors" -ge 1 ] && printf '%s' "$first" | grep -q "$want"; then
				echo "ok    $what broken variant caught: ${first#pan:1: }"
				if [ "$verbose" = 1 ]; then
					spin -t "${dflags[@]}" -p -g -l active.pml 2>&1 | sed 's/^/      /'
				fi
				exit 0
			fi
			echo "FAIL  $what broken variant NOT caught as \"$want\" (errors=$errors ${first})"
			exit 1
			;;
		esac
	) >"$dir/line" 2>&1 && status=0 || status=1
	echo "$status" >"$dir/status"
}

t0=$(date +%s.%N)
echo "spin model check of $model ($(spin -V 2>&1 | head -1); ${#runs[@]} runs, $jobs at once)"
running=0
for i in "${!runs[@]}"; do
	run_one "$i" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait -n || true
		running=$((running - 1))
	fi
done
wait || true

fail=0
for i in "${!runs[@]}"; do
	cat "$tmp/$i/line"
	[ "$(cat "$tmp/$i/status" 2>/dev/null || echo 1)" = 0 ] || fail=1
done
t1=$(date +%s.%N)
total=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
if [ "$fail" = 0 ]; then
	echo "PASS: all ${#runs[@]} runs as required (${total}s)"
else
	echo "FAILED (${total}s)"
fi
exit "$fail"
