#!/usr/bin/env bash
# deploy/bench.sh — benchmarks, each printing a table with its comparison
# measured in the same run. Needs deploy/setup.sh to have run.
#   SIOS_BENCH_SECONDS  measuring time per cell (default 3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --workspace --bins --quiet
cargo bench -p sios-e2e --bench invoke --quiet
cargo bench -p sios-e2e --bench catalog --quiet
cargo bench -p sios-e2e --bench spawn --quiet
cargo bench -p sios-audit --bench audit --quiet
cargo bench -p sios-policy --quiet
cargo bench -p sios-e2e --bench policy --quiet
cargo bench -p sios-memory --quiet
