// Package harness starts real processes for graylane's end-to-end tests: the pinned Traefik
// binary with the plugins mounted as local plugins and a file provider watching a directory
// (StartTraefik), and small HTTP backends (StartBackend). Every process is stopped by the
// test's Cleanup; ports are free loopback ports; waits are bounded.
//
// Processes started here are children of the test process. On Linux they are also killed when
// the test process dies (Traefik through the parent-death signal, backends because their
// standard input closes), so an aborted `go test` leaves nothing behind. LeftoverChildren
// lists the children still alive, for a TestMain to check.
package harness
