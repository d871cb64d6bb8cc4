#!/usr/bin/env bash
# deploy/test.sh — the whole test suite, from a fresh clone: set-up (models,
# ONNX Runtime, fixtures), then formatting and lint gates, then every test of
# every crate, including the end-to-end tests that start real appliances.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

step "set-up (deploy/setup.sh --no-cargo)"
bash deploy/setup.sh --no-cargo

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build the binaries the end-to-end tests start"
cargo build --workspace --bins --quiet

step "cargo test --workspace"
# The end-to-end tests fail (rather than skip) when set-up is missing in CI.
export CI="${CI:-}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?

# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "\nsios tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
