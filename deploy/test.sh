#!/usr/bin/env bash
# deploy/test.sh — the whole test suite, from a fresh clone: set-up (models,
# ONNX Runtime, fixtures), then formatting and lint gates, then every test of
# every crate, including the end-to-end tests that start real appliances.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

# A clean clone gains nothing from incremental compilation, and its cache
# would be the biggest thing in target/ after the objects themselves.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi

step "set-up (deploy/setup.sh --no-cargo)"
bash deploy/setup.sh --no-cargo

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build the binaries the end-to-end tests start"
cargo build --workspace --bins --quiet

# Zero egress, proven on every run: the tests run inside a fresh network
# namespace whose only interface is loopback, and cargo is kept offline
# (set-up above fetched everything). That needs root, as CI has; elsewhere
# the suite runs with the host's network and says so.
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null && command -v ip >/dev/null; then
    step "cargo test --workspace, inside a network namespace with only loopback"
    isolated=(unshare --net sh -c 'ip link set lo up && exec "$@"' sh)
else
    if [ -n "${CI:-}" ]; then
        echo "CI must run the suite inside an empty network namespace: run as root, with unshare and ip (iproute2)" >&2
        exit 1
    fi
    step "cargo test --workspace"
    echo "WARNING: not root (or no unshare/ip): the suite runs with this host's network, so it does not prove zero egress" >&2
    isolated=()
fi
# The end-to-end tests fail (rather than skip) when set-up is missing in CI.
export CI="${CI:-}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
"${isolated[@]}" cargo test --workspace --offline 2>&1 | tee "$log" || status=$?

# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "\nsios tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
