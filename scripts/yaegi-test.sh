#!/usr/bin/env bash
# Runs the tests of the given plugin packages interpreted by Yaegi, the version Traefik embeds,
# with the standard library symbols only (as Traefik loads plugins).
# Usage: scripts/yaegi-test.sh [yaegi test flags] ./mark ./dispatch .
# (for example: scripts/yaegi-test.sh -v -run TestSticky ./dispatch)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAYLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/graylane}
version=$(cd "$root/e2e" && go list -m -f '{{.Version}}' github.com/traefik/yaegi)
yaegi="$cache/bin/yaegi-$version"
if [ ! -x "$yaegi" ]; then
	echo "yaegi-test: installing the yaegi $version CLI from the Go module proxy" >&2
	mkdir -p "$cache/bin"
	tmp=$(mktemp -d)
	GOBIN="$tmp" go install "github.com/traefik/yaegi/cmd/yaegi@$version"
	mv "$tmp/yaegi" "$yaegi"
	rmdir "$tmp"
fi

# Yaegi finds packages in a GOPATH layout, like Traefik's plugins-local/src.
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/github.com/graylane"
ln -s "$root" "$gopath/src/github.com/graylane/graylane"

# Flags come first, as with go test: a flag other than -v, -short and -failfast takes the next
# argument as its value unless written -flag=value ("-run X", "-bench ."). The other arguments are
# packages, which start with "." (., ./mark).
flags=()
pkgs=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	arg=${args[i]}
	case "$arg" in
	-*=* | -v | -short | -failfast) flags+=("$arg") ;;
	-*)
		if ((i + 1 >= ${#args[@]})); then
			echo "yaegi-test: $arg needs a value" >&2
			exit 2
		fi
		flags+=("$arg=${args[i + 1]}")
		i=$((i + 1))
		;;
	.*) pkgs+=("$arg") ;;
	*) echo "yaegi-test: $arg is neither a flag nor a package (packages start with .)" >&2; exit 2 ;;
	esac
done
status=0
for pkg in "${pkgs[@]}"; do
	echo "yaegi test $pkg" >&2
	# yaegi test resolves the package from the current directory.
	(cd "$gopath/src/github.com/graylane/graylane/$pkg" &&
		GOPATH="$gopath" GO111MODULE=off "$yaegi" test "${flags[@]}" .) || status=1
done
exit $status
