#!/usr/bin/env bash
# README command 2: set up (idempotent), then run the whole test suite —
# formatting, lints, unit tests and the end-to-end tests against the real
# models. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export GGML_NO_BACKTRACE=1
echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --release --locked --all-targets --quiet -- -D warnings
echo "[test] cargo test"
cargo test --release --locked
