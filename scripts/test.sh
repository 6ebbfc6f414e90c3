#!/usr/bin/env bash
# The whole check, as CI runs it: contract lint and compatibility, generated
# code freshness, type check, external tools, Go and Python client stubs
# (examples/*/gen, for test/e2e/polyglot.test.ts), then every mocha suite in one run
# (its last line reads "N passed, N failed").
set -euo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin
step() { printf '\n== %s\n' "$*" >&2; }

step "buf lint";        "$bin/buf" lint
step "buf format";      "$bin/buf" format --diff --exit-code proto
step "buf breaking";    bash scripts/buf-breaking.sh
step "generated code";  bash scripts/check-generated.sh
step "typecheck";       "$bin/tsc" -p .
step "console typecheck"; "$bin/tsc" -p web
step "tools";           bash scripts/install-tools.sh
step "client stubs";    bash scripts/generate-clients.sh
step "envoy.yaml";      "$bin/tsx" scripts/envoy-config.ts --check && .tools/bin/envoy --mode validate -c envoy.yaml --log-level warn
step "tests";           "$bin/mocha" "test/unit/**/*.test.ts" "test/integration/**/*.test.ts" "test/e2e/**/*.test.ts" "$@"
