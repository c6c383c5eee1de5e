#!/usr/bin/env bash
# Issue 14's scale figures (BENCHMARKS.md, section 10), before and after a
# change, alternated A B A B in one run on one Redis:
#
#   git archive <before> | tar -x -C /tmp/scale-before
#   cp bench/scale_test.go /tmp/scale-before/bench/
#   cp credential/scale_test.go /tmp/scale-before/credential/
#   cp conf/scale_test.go /tmp/scale-before/conf/
#   cp wecom/scale_test.go /tmp/scale-before/wecom/
#   cp credential/spread_internal_test.go /tmp/scale-before/credential/
#   BEFORE=/tmp/scale-before bash bench/scale_ab.sh
#
# AFTER defaults to this checkout. It starts a throwaway redis-server
# (Debian's package) on a loopback port and writes results/scale-*.txt.
set -u
cd "$(dirname "$0")/.."
B=${BEFORE:?set BEFORE to the tree to compare with}
A=${AFTER:-$PWD}
R=${OUT:-$PWD/bench/results}
mkdir -p "$R"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wechatconf-scale.XXXXXX")
port=$((20000 + RANDOM % 10000))
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 1
export WECHATCONF_BENCH_REDIS=127.0.0.1:$port
{ date -u; uptime; go version; redis-server --version; nproc; } >"$R/scale-machine.txt"
: >"$R/scale-memory.txt"; : >"$R/scale-coldstart.txt"; : >"$R/scale-hotpath.txt"; : >"$R/scale-spread.txt"
for round in 1 2; do
	for side in before after; do
		d=$B
		[ "$side" = after ] && d=$A
		echo "== $side round $round $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$R/scale-memory.txt" "$R/scale-coldstart.txt" "$R/scale-hotpath.txt"
		(cd "$d/bench" && go test -run '^$' -bench 'ScaleMemory' -benchtime=1x ./ 2>&1 | grep -E '^Benchmark') | tee -a "$R/scale-memory.txt"
		(cd "$d/bench" && go test -run '^$' -bench 'ScaleColdStart' -benchtime=1x -count=2 ./ 2>&1 | grep -E '^Benchmark') | tee -a "$R/scale-coldstart.txt"
		(cd "$d" && go test -run '^$' -bench 'AccessTokenHot$|KeeperGetHot$' -count=3 ./conf/ ./credential/ 2>&1 | grep -E '^Benchmark') | tee -a "$R/scale-hotpath.txt"
	done
done
for side in before after; do
	d=$B
	[ "$side" = after ] && d=$A
	echo "== $side" | tee -a "$R/scale-spread.txt"
	(cd "$d" && go test -race -count=1 -run 'TestRereadsAreSpreadOverTheCycle|TestRefreshSpread$|TestGrantScheduleSpreadsOverCycles|TestHeapPerConfWithALoadedToken|TestHeapPerAppWithALoadedToken' -v ./credential/ ./conf/ ./wecom/ 2>&1 |
		grep -E '_test.go:[0-9]+:|^(---|ok|FAIL)') | tee -a "$R/scale-spread.txt"
done
