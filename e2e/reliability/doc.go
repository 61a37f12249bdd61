// Package reliability holds graylane's reliability end-to-end tests: a real Traefik (the
// release pinned in e2e/go.mod, built from source) with the mark and dispatch plugins loaded
// as local plugins, real backend processes, real HTTP on loopback.
//
//   - TestReloadSoak rewrites the dynamic configuration over and over under load: no request
//     may fail, and Traefik's goroutines and heap must stay flat.
//   - TestHostileInput sends spoofed lane headers, oversized headers, garbage cookies, garbage
//     and huge JWTs and invalid app versions: none may reach a lane it should not, none may
//     make Traefik panic, every one is answered.
//   - TestFaults kills, hangs and slows lane servers under load and checks retry, passive
//     health, timeouts and fallback.
//   - TestReplicaConsistency sends the same users to two Traefik processes with the same
//     configuration: both must put every user in the same lane.
//
// Every loop is bounded in count and time. The short variants run in `make test`; set
// GRAYLANE_LONG=1 for the long ones. See the Reliability section of the README.
package reliability
