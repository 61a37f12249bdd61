#!/usr/bin/env bash
# Builds etcd and kube-apiserver, the two processes of a minimal Kubernetes control plane, from
# the Go module proxy into a cache directory outside the repository (next to the Traefik build),
# and prints the directory holding both binaries on stdout. Binaries already built are reused.
#
# The e2e Kubernetes test (e2e/k8s_test.go) runs Traefik's kubernetesCRD provider against them.
# The wrapper modules are generated in a temporary directory: no code of those projects is
# committed here.
set -euo pipefail

kube_version=v1.31.0   # k8s.io/kubernetes; its staging modules are published as v0.31.0
staging_version=v0.31.0
etcd_version=v3.5.21   # go.etcd.io/etcd/server/v3, the etcd release Kubernetes 1.31 is tested with

cache=${GRAYLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/graylane}
bin="$cache/kube-$kube_version/bin"
mkdir -p "$bin"

# One build at a time: concurrent test runs wait for the first one instead of building twice.
exec 9>"$bin/.lock"
flock 9

log() { echo "build-kube: $*" >&2; }

# run_build NAME CMD... runs a long go build, printing progress every 30 seconds.
run_build() {
	local name=$1
	shift
	local start
	start=$(date +%s)
	"$@" &
	local pid=$! ticks=0
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		ticks=$((ticks + 1))
		if [ $((ticks % 30)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then
			log "still building $name ($(($(date +%s) - start))s so far)"
		fi
	done
	wait "$pid"
	log "built $name in $(($(date +%s) - start))s"
}

# quiet CMD... runs a command, showing its output only when it fails.
quiet() {
	local out
	if ! out=$("$@" 2>&1); then
		printf '%s\n' "$out" >&2
		log "failed: $*"
		return 1
	fi
}

tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT

# has_version BINARY VERSION: BINARY exists and its --version output mentions VERSION.
# (Not a pipe into grep -q: with pipefail, the binary's SIGPIPE would count as a mismatch.)
has_version() {
	local out
	[ -x "$1" ] && out=$("$1" --version 2>/dev/null) && [[ $out == *"$2"* ]]
}

if ! has_version "$bin/etcd" "${etcd_version#v}"; then
	log "building etcd $etcd_version into $bin, about 1 minute (more on a busy machine)…"
	mkdir -p "$tmp/etcd"
	cat >"$tmp/etcd/main.go" <<'EOF'
// Command etcd runs the etcd server, as the etcd release binary does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
	quiet sh -c "cd '$tmp/etcd' && go mod init graylane.local/etcd && go get go.etcd.io/etcd/server/v3@$etcd_version && go mod tidy"
	run_build etcd sh -c "cd '$tmp/etcd' && go build -o '$bin/etcd.tmp' -ldflags '-s -w' ."
	mv "$bin/etcd.tmp" "$bin/etcd"
fi

if ! has_version "$bin/kube-apiserver" "$kube_version"; then
	log "building kube-apiserver $kube_version into $bin, about 6 minutes on 2 cores (more on a busy machine)…"
	mkdir -p "$tmp/apiserver"
	# k8s.io/kubernetes replaces every k8s.io/* staging module with a ./staging directory;
	# point each of those replaces at the published module of the same release instead.
	gomod=$(go mod download -json "k8s.io/kubernetes@$kube_version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
	{
		echo "module graylane.local/kube-apiserver"
		echo
		echo "go 1.22.0"
		echo
		echo "require k8s.io/kubernetes $kube_version"
		echo
		sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*$#replace \1 => \1 '"$staging_version"'#p' "$gomod"
	} >"$tmp/apiserver/go.mod"
	quiet sh -c "cd '$tmp/apiserver' && go get k8s.io/kubernetes/cmd/kube-apiserver@$kube_version"
	run_build kube-apiserver sh -c "cd '$tmp/apiserver' && go build -o '$bin/kube-apiserver.tmp' \
		-ldflags '-s -w -X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=31' \
		k8s.io/kubernetes/cmd/kube-apiserver"
	mv "$bin/kube-apiserver.tmp" "$bin/kube-apiserver"
fi

echo "$bin"
