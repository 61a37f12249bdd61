#!/usr/bin/env bash
# Builds the Traefik release pinned in e2e/go.mod from the Go module proxy into a cache
# directory outside the repository, and prints the binary's path on stdout. A binary already
# built for the same version is reused.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(cd "$root/e2e" && go list -m -f '{{.Version}}' github.com/traefik/traefik/v3)
cache=${GRAYLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/graylane}
out="$cache/traefik-$version/traefik"

cached() {
	# Not "traefik version | grep -q": grep quitting early makes traefik die of SIGPIPE, and
	# pipefail then reports the cached binary as missing.
	[ -x "$out" ] && [[ "$("$out" version 2>/dev/null)" == *"${version#v}"* ]]
}
if cached; then
	echo "$out"
	exit 0
fi

# One build at a time: a second caller waits for the first and then reuses its binary.
mkdir -p "$(dirname "$out")"
exec 9>"$cache/build-traefik.lock"
flock 9
if cached; then
	echo "$out"
	exit 0
fi
start=$(date +%s)
echo "build-traefik: building Traefik $version from the Go module proxy into $out" >&2
echo "build-traefik: the first build takes about 12 minutes on 2 cores; later runs reuse it" >&2
(
	cd "$root/e2e"
	go build -o "$out.tmp" \
		-ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${version#v} -X github.com/traefik/traefik/v3/pkg/version.Codename=graylane-e2e" \
		github.com/traefik/traefik/v3/cmd/traefik
) &
build=$!
while kill -0 "$build" 2>/dev/null; do
	sleep 30
	kill -0 "$build" 2>/dev/null && echo "build-traefik: still building ($(( $(date +%s) - start ))s so far)" >&2
done
wait "$build"
mv "$out.tmp" "$out"
echo "build-traefik: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
