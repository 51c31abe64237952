#!/usr/bin/env bash
# Build Jaeger v2 from the Go module proxy and cache the binary outside the repo.
# `go install ...@version` is refused because of a replace directive in Jaeger's go.mod,
# so we build through a scratch module (REFERENCE.md section 6). Prints the binary path.
set -euo pipefail
version="${JAEGER_VERSION:-v1.76.0}"
cache="${MESHTRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshtrace}"
bin="$cache/jaeger-$version"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "build_jaeger: Go is required to build Jaeger" >&2; exit 1; }
mkdir -p "$cache"
work="$(mktemp -d "$cache/jaeger-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
(
  cd "$work"
  go mod init local/jb >/dev/null 2>&1
  go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$version" >&2
  go build -o jaeger github.com/jaegertracing/jaeger/cmd/jaeger >&2
)
mv "$work/jaeger" "$bin.tmp" && mv "$bin.tmp" "$bin"
echo "build_jaeger: built $version in $(( $(date +%s) - start ))s" >&2
echo "$bin"
