#!/usr/bin/env python3
"""End-of-speech → final latency and first-partial time against a running
`stt serve`, with real-time pacing, using the real `stt file` client.

Each stream is espeak speech (en-us+m3, 140 wpm) with 0.5 s of leading
silence and 1.5 s after; several sentences per stream with 1 s gaps make it
conversation-like. For every final: end-of-speech → final = the client's
latency for the final (measured from sending the sample at end_sec) plus
end_sec minus the last voiced sample of that sentence. First partial is
measured from the first voiced sample.

With --audio-dir, streams play recorded conversations instead: the WAVs that
`scripts/devset.py concat --out DIR` writes, each with a NAME.json sidecar of
its utterances' start/end seconds. Streams take the files round-robin, and
end of utterance → final is measured per utterance, to the final that closes
it, from the sidecar's end time. That is where the source clip ends, not its
last voiced sample: silence a recording has after its speech is not counted
as waiting, so per utterance this is a lower bound on end of speech → final.
An utterance whose closing final arrived before the utterance ended (the
server heard its end early: a whispered or unvoiced tail, or the tail got no
final) has no such latency; those are counted apart. First result (partial or
final) replaces first partial, as a short first utterance may get only a final.

  scripts/bench-latency.py --server 127.0.0.1:50051 --streams 1 --rounds 3
  scripts/bench-latency.py --streams 4 --sentences 3      # concurrency
  scripts/bench-latency.py --language en   # skip detection (multilingual models)
  scripts/bench-latency.py --streams 4 --probe-http 127.0.0.1:8000
      # also time GET /metrics and /health every 50 ms while the streams
      # keep the decode workers saturated
  scripts/devset.py concat --out /tmp/convo
  scripts/bench-latency.py --audio-dir /tmp/convo --streams 4 --rounds 2
      # 8 recorded conversations: rounds x streams files, one per stream
"""

import argparse
import array
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave
from concurrent.futures import ThreadPoolExecutor

SENTENCES = [
    "Please call me back tomorrow afternoon.",
    "I would like to order a large pizza.",
    "Good morning everyone, let us begin the meeting.",
    "Thank you for calling customer support.",
    "The project deadline is next Friday.",
    "We need more coffee in the kitchen.",
]
RATE = 16000
# A final counts as covering an utterance only if they share this much time,
# so a final that runs a little into the next utterance (VAD end padding)
# neither claims it nor hides that it went missing.
MIN_OVERLAP_SEC = 0.1


def speak(text, path):
    raw = path + ".raw.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+m3", "-s", "140", "-w", raw, text], check=True)
    subprocess.run(["sox", raw, "-r", str(RATE), "-c", "1", "-b", "16", path], check=True)
    with wave.open(path) as w:
        a = array.array("h", w.readframes(w.getnframes()))
    voiced = [i for i, s in enumerate(a) if abs(s) > 650]
    return a[voiced[0]: voiced[-1] + 1]


def build_stream(texts, tmp, tag):
    """Returns (wav path, [(voiced_start_sec, voiced_end_sec)])."""
    out = array.array("h", [0] * (RATE // 2))
    spans = []
    for i, t in enumerate(texts):
        s = speak(t, os.path.join(tmp, f"{tag}_{i}.wav"))
        start = len(out)
        out.extend(s)
        spans.append((start / RATE, len(out) / RATE))
        out.extend([0] * (RATE if i + 1 < len(texts) else RATE * 3 // 2))
    path = os.path.join(tmp, f"{tag}.wav")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(out.tobytes())
    return path, spans


def load_conversations(audio_dir):
    """[(wav path, [(start_sec, end_sec)], name)] from devset.py concat's sidecars."""
    if not os.path.isdir(audio_dir):
        sys.exit(f"error: --audio-dir {audio_dir} is not a directory "
                 "(make one with `python3 scripts/devset.py concat --out DIR`)")
    convs = []
    for name in sorted(os.listdir(audio_dir)):
        if not name.endswith(".json"):
            continue
        meta_path = os.path.join(audio_dir, name)
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            wav = os.path.join(audio_dir, meta["audio"])
            spans = [(float(u["start"]), float(u["end"])) for u in meta["utterances"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            sys.exit(f"error: {meta_path} is not a devset.py concat sidecar: {e!r}")
        if not os.path.isfile(wav):
            sys.exit(f"error: {meta_path} names {meta['audio']}, which is not in {audio_dir}")
        if not spans:
            sys.exit(f"error: {meta_path} lists no utterances")
        convs.append((wav, spans, os.path.splitext(meta["audio"])[0]))
    if not convs:
        sys.exit(f"error: no NAME.json sidecars in {audio_dir} "
                 "(make them with `python3 scripts/devset.py concat --out DIR`)")
    return convs


def overlap(span, f):
    return min(span[1], f["end_sec"]) - max(span[0], f["start_sec"])


def covers(span, f):
    # Utterances shorter than twice the threshold need only half their length.
    return overlap(span, f) >= min(MIN_OVERLAP_SEC, (span[1] - span[0]) / 2)


def utterance_latencies(finals, spans):
    """End of utterance → final, one per utterance that some final covers.

    The final that closes an utterance is, of the finals covering it, the one
    whose end is nearest the utterance's end: earlier finals of a long
    utterance that VAD split at a pause are not its end, and the server's end
    time may fall short of the sidecar's when the clip ends in silence. One
    final may close two utterances (merged across the gap); each then counts
    how long its own end waited.

    Returns (latencies, early): early counts utterances whose closing final
    was received before the utterance ended, which a latency cannot describe."""
    out, early = [], 0
    for span in spans:
        over = [f for f in finals if covers(span, f) and f.get("latency_sec") is not None]
        f = min(over, key=lambda f: abs(f["end_sec"] - span[1]), default=None)
        if f is None:
            continue
        e2f = f["latency_sec"] + f["end_sec"] - span[1]
        if e2f < 0:
            early += 1
        else:
            out.append(e2f)
    return out, early


def run_stream(stt, server, path, spans, vad_silence, language=None, per_utterance=False):
    cmd = [stt, "file", "--server", server, "--json", "--metrics", "--vad-silence", str(vad_silence)]
    if language:
        cmd += ["--language", language]
    cmd.append(path)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        # the client's "error:" line says what failed; a "hint:" after it, only what to try
        said = done.stderr.strip().splitlines()
        return {"error": [l for l in said if l.startswith("error")] or said[-1:] or [f"exit status {done.returncode}"]}
    lines = [json.loads(l) for l in done.stdout.splitlines() if l.startswith("{")]
    results = [l for l in lines if "is_final" in l]
    finals = [r for r in results if r["is_final"]]
    e2f, early = [], 0
    if per_utterance:
        e2f, early = utterance_latencies(finals, spans)
    else:
        for f in finals:
            # The sentence this final belongs to: the span it overlaps most.
            span = max(spans, key=lambda s: overlap(s, f))
            if f.get("latency_sec") is not None:
                e2f.append(f["latency_sec"] + f["end_sec"] - span[1])
    missing = sum(1 for s in spans if not any(covers(s, f) for f in finals))
    first = None
    metrics = next((l["metrics"] for l in lines if "metrics" in l), {})
    if per_utterance:  # first result of any kind: see the module doc
        if results:
            first = min(r["received_sec"] for r in results) - spans[0][0]
    elif metrics.get("first_partial_sec") is not None:
        first = metrics["first_partial_sec"] - spans[0][0]
    return {"e2f": e2f, "early": early, "finals": len(finals), "missing": missing, "first": first}


class HttpProbe(threading.Thread):
    """Times GET requests to the control plane until stopped."""

    def __init__(self, addr, paths=("/metrics", "/health"), every=0.05):
        super().__init__(daemon=True)
        self.addr, self.paths, self.every = addr, paths, every
        self.times = {p: [] for p in paths}
        self.failures = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for p in self.paths:
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(f"http://{self.addr}{p}", timeout=5) as r:
                        r.read()
                except urllib.error.HTTPError as e:
                    e.read()  # /health may say 500; it still answered
                except OSError:
                    self.failures += 1
                    continue
                self.times[p].append(time.perf_counter() - t0)
            self.stop.wait(self.every)

    def report(self):
        out = {"failures": self.failures}
        for p, v in self.times.items():
            out[p] = {
                "n": len(v),
                "p50_ms": round(pct(v, 50) * 1000, 2),
                "p99_ms": round(pct(v, 99) * 1000, 2),
                "max_ms": round(max(v) * 1000, 2) if v else None,
            }
        return out


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--stt", default="target/release/stt")
    ap.add_argument("--streams", type=int, default=1, help="concurrent streams")
    ap.add_argument("--sentences", type=int, help="espeak sentences per stream (default 1)")
    ap.add_argument("--audio-dir", metavar="DIR",
                    help="play `devset.py concat` conversations (WAV + NAME.json) instead of espeak")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--vad-silence", type=float, default=0.5)
    ap.add_argument("--language", help="force this language (default: the server's, or auto-detect)")
    ap.add_argument("--probe-http", metavar="HOST:PORT", help="time /metrics and /health while streaming")
    args = ap.parse_args()
    if args.audio_dir and args.sentences is not None:
        ap.error("--sentences is for espeak speech; with --audio-dir each stream plays one whole conversation")
    if args.streams < 1 or args.rounds < 1:
        ap.error("--streams and --rounds must be at least 1")
    args.sentences = args.sentences or 1
    if not shutil.which(args.stt):
        sys.exit(f"error: no stt client at {args.stt} (cargo build --release, or pass --stt)")
    if not args.audio_dir:
        absent = [t for t in ("espeak-ng", "sox") if not shutil.which(t)]
        if absent:
            sys.exit(f"error: espeak speech needs {' and '.join(absent)} (or use --audio-dir)")
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        if args.audio_dir:
            convs = load_conversations(args.audio_dir)
            print(f"{len(convs)} conversations ({sum(len(c[1]) for c in convs)} utterances) in "
                  f"{args.audio_dir}; {args.streams} streams x {args.rounds} rounds", file=sys.stderr)
        for r in range(args.rounds):
            batch = []
            for s in range(args.streams):
                if args.audio_dir:
                    wav, spans, _ = convs[(r * args.streams + s) % len(convs)]
                    batch.append((wav, spans))
                    continue
                k = (r * args.streams + s) * args.sentences
                texts = [SENTENCES[(k + i) % len(SENTENCES)] for i in range(args.sentences)]
                batch.append(build_stream(texts, tmp, f"r{r}s{s}"))
            jobs.append(batch)
        e2f, firsts, errors, finals, missing, early, utterances = [], [], [], 0, 0, 0, 0
        probe = HttpProbe(args.probe_http) if args.probe_http else None
        if probe:
            probe.start()
        for r, batch in enumerate(jobs):
            with ThreadPoolExecutor(max_workers=args.streams) as ex:
                outs = list(ex.map(lambda b: run_stream(args.stt, args.server, b[0], b[1], args.vad_silence,
                                                        args.language, per_utterance=bool(args.audio_dir)), batch))
            for (path, spans), o in zip(batch, outs):
                if "error" in o:
                    # a temporary espeak file's name says nothing; a conversation's does
                    errors.append([f"{os.path.basename(path)}: {e}" for e in o["error"]] if args.audio_dir else o["error"])
                    continue
                e2f += o["e2f"]
                finals += o["finals"]
                missing += o["missing"]
                early += o["early"]
                utterances += len(spans)
                if o["first"] is not None:
                    firsts.append(o["first"])
            print(f"round {r + 1}/{args.rounds} done: {sum(o.get('finals', 0) for o in outs)} finals, "
                  f"{sum('error' in o for o in outs)} errors", file=sys.stderr)
        if probe:
            probe.stop.set()
            probe.join()
    audio = bool(args.audio_dir)
    report = {
        "streams": args.streams,
        **({"audio_dir": args.audio_dir} if audio else {"sentences_per_stream": args.sentences}),
        "rounds": args.rounds,
        "finals": finals,
        "utterances": utterances,
        # no final covers them (MIN_OVERLAP_SEC); a stream that failed counts none
        "utterances_without_final": missing,
        "errors": errors,
        ("end_of_utterance_to_final_sec" if audio else "end_of_speech_to_final_sec"): {
            "p50": round(pct(e2f, 50), 3),
            "p95": round(pct(e2f, 95), 3),
            "max": round(max(e2f), 3) if e2f else None,
            "n": len(e2f),
        },
        **({"utterances_final_before_end": early} if audio else {}),
        ("speech_start_to_first_result_sec" if audio else "speech_start_to_first_partial_sec"): {
            "p50": round(pct(firsts, 50), 3),
            "n": len(firsts),
        },
    }
    if probe:
        report["http_under_load"] = probe.report()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
