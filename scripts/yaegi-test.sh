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

# Packages are the arguments that start with "." (., ./mark); the others are test flags. yaegi test
# reads a flag's value only in the -flag=value form, so "-run X" is passed on as "-run=X".
flags=()
pkgs=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	arg=${args[i]}
	next=${args[i + 1]:-}
	case "$arg" in
	.*) pkgs+=("$arg") ;;
	-*=* | -v | -short | -failfast) flags+=("$arg") ;;
	-*)
		if [ -n "$next" ] && [[ $next != -* && $next != .* ]]; then
			flags+=("$arg=$next")
			i=$((i + 1))
		else
			flags+=("$arg")
		fi
		;;
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
