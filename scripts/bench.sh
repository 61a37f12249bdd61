#!/usr/bin/env bash
# Runs graylane's benchmarks (make bench): the plugins' micro-benchmarks, compiled and
# interpreted by Yaegi, then the load benchmark in a real Traefik (TestBench in e2e/bench),
# which writes BENCHMARKS.md and docs/bench.svg.
#
# Environment: BENCH_DURATION (default 10s) is the measured time of each variant,
# BENCH_WARMUP (default 3s) the warm-up before it, BENCH_ROUNDS (default 1) how many times
# every variant runs (the median round is reported).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export BENCH_DURATION=${BENCH_DURATION:-10s}

log() { echo "bench: $*" >&2; }

# The load generator: wrk from Debian, hey when wrk cannot be installed.
if ! command -v wrk >/dev/null && ! command -v hey >/dev/null; then
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
	log "installing wrk with apt-get"
	$sudo apt-get update -qq
	if ! $sudo apt-get install -y -qq wrk >/dev/null; then
		log "wrk is not installable, trying hey"
		$sudo apt-get install -y -qq hey >/dev/null
	fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Micro-benchmarks first, while nothing else runs. A failure is reported, not fatal: its
# output goes into BENCHMARKS.md as it is.
log "micro-benchmarks, compiled"
go test -run '^$' -bench . -benchmem ./mark ./dispatch 2>&1 | tee "$tmp/micro-compiled.txt" || true
# Interpreted benchmarks can be slow: each package gets BENCH_YAEGI_TIMEOUT (default 5m).
for pkg in mark dispatch; do
	log "micro-benchmarks of ./$pkg, interpreted by Yaegi"
	if ! timeout -k 10s "${BENCH_YAEGI_TIMEOUT:-5m}" \
		./scripts/yaegi-test.sh -run='^$' -bench=. -benchtime=2000x "./$pkg" >"$tmp/yaegi-$pkg.txt" 2>&1; then
		echo "(./$pkg: failed, or stopped after ${BENCH_YAEGI_TIMEOUT:-5m})" >>"$tmp/yaegi-$pkg.txt"
	fi
	tee -a "$tmp/micro-yaegi.txt" <"$tmp/yaegi-$pkg.txt"
done

log "micro-benchmarks as Traefik runs the plugins (its plugin loader, called from compiled code)"
(cd e2e && go test -run '^$' -bench TraefikLoaded -benchtime=20000x . 2>&1) | tee "$tmp/micro-loaded.txt" || true

traefik=$(./scripts/build-traefik.sh)
log "load benchmark: every variant for $BENCH_DURATION, one after another"
cd e2e
GRAYLANE_BENCH=1 GRAYLANE_TRAEFIK="$traefik" \
	BENCH_MICRO_COMPILED="$tmp/micro-compiled.txt" BENCH_MICRO_YAEGI="$tmp/micro-yaegi.txt" \
	BENCH_MICRO_LOADED="$tmp/micro-loaded.txt" \
	BENCH_COMMAND="${BENCH_COMMAND:-BENCH_DURATION=$BENCH_DURATION make bench}" \
	go test -count=1 -timeout 60m -run '^TestBench$' -v ./bench
