#!/usr/bin/env bash
# Runs every comparison of BENCHMARKS.md against real servers and writes the
# raw results, benchstat's summaries and the ours/theirs ratios to results/.
#
#   bash run.sh                     # tests, then COUNT=6 runs of each benchmark
#   COUNT=10 HERD_CYCLES=10 bash run.sh
#   bash run.sh test                # the tests and each benchmark once, with the servers (make test)
#
# It starts throwaway Redis, Memcached and PostgreSQL servers from the
# machine's own binaries (Debian: redis-server, memcached, postgresql-15) on
# free loopback ports, passes their addresses in WECHATCONF_BENCH_*, and stops
# them on exit. Servers already running can be given instead: set all three
# variables and nothing is started.
set -euo pipefail
cd "$(dirname "$0")"

COUNT=${COUNT:-6}             # -count of the hot path, lease and crypto benchmarks (benchstat wants >= 6)
HERD_COUNT=${HERD_COUNT:-3}   # -count of the herd benchmark
HERD_CYCLES=${HERD_CYCLES:-5} # cycles per herd run (about 2.5 s each)
OUT=${OUT:-results}
BENCHSTAT=(go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da)
PGBIN=/usr/lib/postgresql/15/bin

tmp=$(mktemp -d "${TMPDIR:-/tmp}/wechatconf-bench.XXXXXX")
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

# freeport prints a loopback port that nothing answers on, below the
# kernel's ephemeral range: a port in that range can be taken at any moment
# by an outgoing connection (or linger in TIME_WAIT), and the server's bind
# then fails although nothing listens there.
ephemeral_lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
freeport() {
	local p
	while :; do
		p=$((10000 + RANDOM % (ephemeral_lo - 10000)))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# await waits up to 30 s for a command to succeed.
await() {
	local what=$1
	shift
	for _ in $(seq 300); do
		if "$@" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "run.sh: $what did not start; its log:" >&2
	cat "$tmp/$what.log" >&2 || true
	exit 1
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ -z "${WECHATCONF_BENCH_REDIS:-}" || -z "${WECHATCONF_BENCH_MEMCACHED:-}" || -z "${WECHATCONF_BENCH_POSTGRES:-}" ]]; then
	port=$(freeport)
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
	pids+=($!)
	await redis listening "$port"
	export WECHATCONF_BENCH_REDIS=127.0.0.1:$port

	port=$(freeport)
	user=()
	if [[ $EUID -eq 0 ]]; then user=(-u nobody); fi
	memcached -l 127.0.0.1 -p "$port" -U 0 -m 64 "${user[@]}" >"$tmp/memcached.log" 2>&1 &
	pids+=($!)
	await memcached listening "$port"
	export WECHATCONF_BENCH_MEMCACHED=127.0.0.1:$port

	# PostgreSQL refuses to run as root: as root, run it as postgres.
	as=()
	if [[ $EUID -eq 0 ]]; then
		as=(runuser -u postgres --)
		chmod 755 "$tmp"
		mkdir "$tmp/pg" && chown postgres: "$tmp/pg"
	else
		mkdir "$tmp/pg"
	fi
	port=$(freeport)
	"${as[@]}" "$PGBIN/initdb" -D "$tmp/pg/data" -U postgres --auth=trust --no-sync -E UTF8 >"$tmp/postgres.log" 2>&1
	"${as[@]}" "$PGBIN/postgres" -D "$tmp/pg/data" -p "$port" -k "$tmp/pg" -h 127.0.0.1 \
		-c fsync=off -c synchronous_commit=off -c full_page_writes=off >>"$tmp/postgres.log" 2>&1 &
	pids+=($!)
	await postgres "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres
	export WECHATCONF_BENCH_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
fi
echo "== servers: redis $WECHATCONF_BENCH_REDIS, memcached $WECHATCONF_BENCH_MEMCACHED, postgres $WECHATCONF_BENCH_POSTGRES"

echo "== tests, with the servers"
go vet ./...
if [[ "${1:-}" == test ]]; then
	# make test's mode: the tests, and every benchmark once so none rots
	# (the scale benchmarks with 1 000 apps, not 10 000: -race is slow).
	go test -race -count=1 -bench=. -benchtime=1x ./... -args -scale.n=1000
	exit 0
fi
go test -race -count=1 ./...

mkdir -p "$OUT"
{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "go: $(go version)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
	echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "redis: $(redis-server --version | cut -d' ' -f3)"
	echo "memcached: $(memcached -V)"
	echo "postgres: $("$PGBIN/postgres" --version)"
} >"$OUT/machine.txt"

echo "== hot path: -count=$COUNT"
go test -run='^$' -bench=HotPath -benchmem -count="$COUNT" ./... | tee "$OUT/hotpath.txt"

echo "== lease: -count=$COUNT"
go test -run='^$' -bench=Lease -benchmem -count="$COUNT" ./... | tee "$OUT/lease.txt"

echo "== herd: $HERD_CYCLES cycles x -count=$HERD_COUNT"
go test -run='^$' -bench=Herd -benchtime="${HERD_CYCLES}x" -count="$HERD_COUNT" -timeout=30m ./... | tee "$OUT/herd.txt"

echo "== crypto: wxcrypto/interop's benchmarks, -count=$COUNT"
(cd ../wxcrypto/interop && go test -run='^$' -bench=. -benchmem -count="$COUNT" ./...) | tee "$OUT/crypto.txt"

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

# ratio turns benchstat's CSV (medians, one column per impl, ours first, as
# the benchmarks run ours first) into rows of: name, unit, ours, theirs,
# ours/theirs. A row with no peer (bbolt, PostgreSQL) has no ratio.
ratio() {
	awk -F, '
		$0 == "" { hdr = 0; next }
		/^,/ { if (++hdr == 1) { ours = $2; theirs = $4 } else { unit = $2 } next }
		NF < 2 || $1 == "geomean" { next }
		{
			r = ($4 == "") ? "" : ($4 + 0 == 0) ? (($2 + 0 == 0) ? "=" : "inf") : sprintf("%.3g", $2 / $4)
			printf "%-36s %-14s %-12s %12.4g %-12s %12s %10s\n", $1, unit, ours, $2, theirs, $4 == "" ? "-" : sprintf("%.4g", $4), r
		}'
}

: >"$OUT/ratios.txt"
for f in hotpath lease herd crypto; do
	"${BENCHSTAT[@]}" -col /impl "$OUT/$f.txt" >"$OUT/$f.stat.txt"
	"${BENCHSTAT[@]}" -col /impl -format csv "$OUT/$f.txt" 2>/dev/null | ratio >>"$OUT/ratios.txt"
done
echo "== medians and ours/theirs (results/ratios.txt)"
cat "$OUT/ratios.txt"
cat "$OUT/machine.txt"
