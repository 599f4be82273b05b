#!/bin/sh
# gen_check.sh: fail if the committed msgp-generated code under decoders/ is
# not what `go generate` produces from the current sources.
#
# It copies each generating package (its non-test .go files, plus go.mod and
# go.sum) into a scratch module in a temporary directory, runs `go generate`
# there (same //go:generate lines, same msgp version from go.mod's `tool`
# directive) and diffs every *_gen.go file against the committed one. The
# working tree is never written to.
#
# Usage (from anywhere): sh decoders/wire/gen_check.sh
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

cp "$root/go.mod" "$root/go.sum" "$tmp/"

# Packages whose sources carry //go:generate go tool msgp lines.
pkgs="decoders/wire decoders/internal/mapform decoders/internal/reftuple"

status=0
for pkg in $pkgs; do
	mkdir -p "$tmp/$pkg"
	for f in "$root/$pkg"/*.go; do
		case "$f" in
		*_test.go | *_gen.go) ;;
		*) cp "$f" "$tmp/$pkg/" ;;
		esac
	done
	(cd "$tmp/$pkg" && go generate .)

	for gen in "$tmp/$pkg"/*_gen.go; do
		[ -e "$gen" ] || continue
		name=$(basename "$gen")
		if [ ! -e "$root/$pkg/$name" ]; then
			echo "gen_check: $pkg/$name is generated but not committed" >&2
			status=1
		elif ! diff -u "$root/$pkg/$name" "$gen" >&2; then
			echo "gen_check: $pkg/$name is stale; run: (cd $pkg && go generate)" >&2
			status=1
		fi
	done
	for committed in "$root/$pkg"/*_gen.go; do
		[ -e "$committed" ] || continue
		name=$(basename "$committed")
		if [ ! -e "$tmp/$pkg/$name" ]; then
			echo "gen_check: $pkg/$name is committed but no longer generated" >&2
			status=1
		fi
	done
done

if [ "$status" -eq 0 ]; then
	echo "gen_check: generated code is current"
fi
exit "$status"
