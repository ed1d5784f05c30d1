#!/usr/bin/env bash
# README command 1: set up (idempotent), then run `stt serve` on the embedded
# defaults (tiny.en + Silero VAD). Extra arguments go to `stt serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target_dir/release/stt" serve "$@"
