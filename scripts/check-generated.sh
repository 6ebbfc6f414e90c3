#!/usr/bin/env bash
# Fails when gen/ is not exactly what `buf generate` makes from proto/ now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node_modules/.bin/buf generate -o "$tmp"
if ! diff -r "$tmp/gen" gen >/dev/null; then
  diff -r "$tmp/gen" gen | head -20 >&2 || true
  echo "gen/ is stale: run 'npm run generate' and commit the result" >&2
  exit 1
fi
echo "gen/ is fresh" >&2
