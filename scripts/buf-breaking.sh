#!/usr/bin/env bash
# `buf breaking` against main: a branch is compared with main; main itself (as CI
# sees it) with its previous commit, so a landing can never break the contract
# clients were generated from. BUF_BREAKING_AGAINST overrides the git ref.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=node_modules/.bin/buf
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo "")
if [[ -n "${BUF_BREAKING_AGAINST:-}" ]]; then
  ref=$BUF_BREAKING_AGAINST
elif [[ "$branch" != "main" ]] && git rev-parse -q --verify main >/dev/null; then
  ref=main
elif git rev-parse -q --verify HEAD~1 >/dev/null; then
  ref=HEAD~1
else
  echo "buf breaking: no earlier commit to compare with; skipped" >&2
  exit 0
fi
if ! git cat-file -e "$ref:buf.yaml" 2>/dev/null; then
  echo "buf breaking: $ref has no buf.yaml yet; skipped" >&2
  exit 0
fi
echo "buf breaking: against $ref" >&2
"$buf" breaking --against ".git#ref=$(git rev-parse "$ref")"
