#!/usr/bin/env bash
# README command 2: set up (idempotent), then run the whole test suite —
# formatting, lints, the deployment files (scripts/lint-deploy.sh), unit
# tests and the end-to-end tests against the real models. CI runs exactly
# this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export GGML_NO_BACKTRACE=1

# Everything the tests write to the temporary directory — scratch files,
# Chromium profiles, uploads — goes in one directory removed at the end,
# however the run ends.
run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/stt-test.XXXXXX")
trap 'rm -rf "$run_tmp"' EXIT
export TMPDIR="$run_tmp"

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
# Pinned, so a new release on PyPI cannot change what the tests run; the
# stamp makes a changed pin reinstall.
compat_pins="grpcio==1.85.3 grpcio-tools==1.85.1 protobuf==7.36.2 openai==3.57.0"
if [ "$(cat "$compat_venv/.pins" 2>/dev/null)" != "$compat_pins" ] \
  || ! "$compat_venv/bin/python" -c "import grpc, grpc_tools, openai" 2>/dev/null; then
  echo "[test] setting up $compat_venv ($compat_pins)"
  python3 -m venv "$compat_venv"
  # shellcheck disable=SC2086 # the pins are separate words
  "$compat_venv/bin/pip" install --quiet --disable-pip-version-check $compat_pins
  echo "$compat_pins" >"$compat_venv/.pins"
fi
export STT_COMPAT_PYTHON="$compat_venv/bin/python"
export STT_OPENAI_PYTHON="$compat_venv/bin/python"

echo "[test] cargo fmt --check"
cargo fmt --all -- --check
# `fault-injection` compiles the test-only STT_FAULT hooks (src/fault.rs)
# that the e2e tests use to provoke ERR2002/2003/3001/3002; shipped builds
# (setup.sh, the Dockerfile) leave it out.
echo "[test] cargo clippy"
cargo clippy --release --locked --all-targets --features fault-injection --quiet -- -D warnings
echo "[test] cargo test"
# One test at a time: every e2e test runs a real server whose whisper threads
# already fill both cores; running them side by side only makes timing-
# sensitive behaviour (partials under load) vary from run to run. The whole
# run ends after 45 minutes whatever hangs (every wait in the harness has
# its own, shorter deadline). The fuzz targets (src/fuzz/) run here with a
# fixed seed; STT_FUZZ_CASES=100000 makes the long run.
timeout --kill-after=30 2700 \
  cargo test --release --locked --features fault-injection -- --test-threads=1
