// Package bench measures graylane's cost under load in a real Traefik, as ratios taken in one
// run on loopback against Traefik without plugins and against the interpreter floor (do-nothing
// Yaegi middlewares on the same router). `make bench` (scripts/bench.sh) runs TestBench with
// GRAYLANE_BENCH=1; it writes BENCHMARKS.md and docs/bench.svg at the repository root.
//
// This package holds the pieces that need no Traefik: the realistic rule set, the load tool
// runner and its output parsers, the static backend, and the report and chart writers.
package bench
