#!/usr/bin/env bash
# README command 2: set up (idempotent), then run the whole test suite —
# formatting, lints, the deployment files (scripts/lint-deploy.sh), unit
# tests and the end-to-end tests against the real models. CI runs exactly
# this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export GGML_NO_BACKTRACE=1

# Deployment files (docker/, k8s/): linters from PyPI in their own venv, and
# the ConfigMap through the binary setup.sh just built.
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
STT_BIN="$target_dir/release/stt" scripts/lint-deploy.sh

# The wire-compatibility test drives the server with a Python client whose
# stubs grpcio-tools generates from proto/stt.proto — another toolchain, as
# the original's clients use. It lives in a throwaway venv outside the
# checkout (nothing is pip-installed system-wide).
compat_venv="${STT_COMPAT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stt/compat-venv}"
# The REST tests use the same venv for OpenAI's own Python client.
if ! "$compat_venv/bin/python" -c "import grpc, grpc_tools, openai" 2>/dev/null; then
  echo "[test] setting up $compat_venv (grpcio, grpcio-tools, openai)"
  python3 -m venv "$compat_venv"
  "$compat_venv/bin/pip" install --quiet --disable-pip-version-check grpcio grpcio-tools openai
fi
export STT_COMPAT_PYTHON="$compat_venv/bin/python"
export STT_OPENAI_PYTHON="$compat_venv/bin/python"

echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --release --locked --all-targets --quiet -- -D warnings
echo "[test] cargo test"
# One test at a time: every e2e test runs a real server whose whisper threads
# already fill both cores; running them side by side only makes timing-
# sensitive behaviour (partials under load) vary from run to run.
cargo test --release --locked -- --test-threads=1
