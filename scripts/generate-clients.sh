#!/usr/bin/env bash
# Generates clients in other languages from proto/ and the vendored
# third_party/proto, with local tools only:
#   Go      examples/go/gen       buf generate --template buf.gen.go.yaml
#                                 (protoc-gen-go + protoc-gen-connect-go)
#   Python  examples/python/gen   grpcio-tools (*_pb2.py, *_pb2.pyi, *_pb2_grpc.py)
# Both outputs are git-ignored and rebuilt from scratch on every run, so the
# command is safe to repeat. The generators are installed (pinned, once) by
# scripts/install-tools.sh into .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-tools.sh

node_modules/.bin/buf generate --template buf.gen.go.yaml
echo "generate-clients: Go stubs in examples/go/gen" >&2

# The agora protos and buf/validate, which they import. google/type and google/rpc
# (error details) come from googleapis-common-protos, which grpcio-status brings
# (examples/python/requirements.txt), so the example decodes details as every Python
# gRPC program does; grpc health/reflection come from grpcio-health-checking and
# grpcio-reflection.
out=examples/python/gen
rm -rf "$out"
mkdir -p "$out"
# (Names relative to their include directory; none has a space.)
protos=$( (cd proto && find agora -name '*.proto'; cd ../third_party/proto && find buf -name '*.proto') | sort)
# grpc_tools.protoc adds the well-known types (google/protobuf/*) to the include path itself.
# shellcheck disable=SC2086
PYTHONPATH="$PWD/.tools/python" python3 -m grpc_tools.protoc -I proto -I third_party/proto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" $protos
echo "generate-clients: Python stubs in $out" >&2
