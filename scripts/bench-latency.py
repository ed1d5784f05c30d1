#!/usr/bin/env python3
"""End-of-speech → final latency and first-partial time against a running
`stt serve`, with real-time pacing, using the real `stt file` client.

Each stream is espeak speech (en-us+m3, 140 wpm) with 0.5 s of leading
silence and 1.5 s after; several sentences per stream with 1 s gaps make it
conversation-like. For every final: end-of-speech → final = the client's
latency for the final (measured from sending the sample at end_sec) plus
end_sec minus the last voiced sample of that sentence. First partial is
measured from the first voiced sample.

  scripts/bench-latency.py --server 127.0.0.1:50051 --streams 1 --rounds 3
  scripts/bench-latency.py --streams 4 --sentences 3      # concurrency
  scripts/bench-latency.py --language en   # skip detection (multilingual models)
  scripts/bench-latency.py --streams 4 --probe-http 127.0.0.1:8000
      # also time GET /metrics and /health every 50 ms while the streams
      # keep the decode workers saturated
"""

import argparse
import array
import json
import os
import statistics
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


def run_stream(stt, server, path, spans, vad_silence, language=None):
    cmd = [stt, "file", "--server", server, "--json", "--metrics", "--vad-silence", str(vad_silence)]
    if language:
        cmd += ["--language", language]
    cmd.append(path)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    lines = [json.loads(l) for l in done.stdout.splitlines() if l.startswith("{")]
    results = [l for l in lines if "is_final" in l]
    finals = [r for r in results if r["is_final"]]
    e2f = []
    for f in finals:
        # The sentence this final belongs to: the span it overlaps most.
        span = max(spans, key=lambda s: min(s[1], f["end_sec"]) - max(s[0], f["start_sec"]))
        if f.get("latency_sec") is not None:
            e2f.append(f["latency_sec"] + f["end_sec"] - span[1])
    first_partial = None
    metrics = next((l["metrics"] for l in lines if "metrics" in l), {})
    if metrics.get("first_partial_sec") is not None:
        first_partial = metrics["first_partial_sec"] - spans[0][0]
    return {"e2f": e2f, "finals": len(finals), "first_partial": first_partial}


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
    ap.add_argument("--sentences", type=int, default=1, help="sentences per stream")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--vad-silence", type=float, default=0.5)
    ap.add_argument("--language", help="force this language (default: the server's, or auto-detect)")
    ap.add_argument("--probe-http", metavar="HOST:PORT", help="time /metrics and /health while streaming")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for r in range(args.rounds):
            batch = []
            for s in range(args.streams):
                k = (r * args.streams + s) * args.sentences
                texts = [SENTENCES[(k + i) % len(SENTENCES)] for i in range(args.sentences)]
                batch.append(build_stream(texts, tmp, f"r{r}s{s}"))
            jobs.append(batch)
        e2f, firsts, errors, finals = [], [], [], 0
        probe = HttpProbe(args.probe_http) if args.probe_http else None
        if probe:
            probe.start()
        for r, batch in enumerate(jobs):
            with ThreadPoolExecutor(max_workers=args.streams) as ex:
                outs = list(ex.map(lambda b: run_stream(args.stt, args.server, b[0], b[1], args.vad_silence, args.language), batch))
            for o in outs:
                if "error" in o:
                    errors.append(o["error"])
                    continue
                e2f += o["e2f"]
                finals += o["finals"]
                if o["first_partial"] is not None:
                    firsts.append(o["first_partial"])
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        if probe:
            probe.stop.set()
            probe.join()
    report = {
        "streams": args.streams,
        "sentences_per_stream": args.sentences,
        "rounds": args.rounds,
        "finals": finals,
        "errors": errors,
        "end_of_speech_to_final_sec": {
            "p50": round(pct(e2f, 50), 3),
            "p95": round(pct(e2f, 95), 3),
            "max": round(max(e2f), 3) if e2f else None,
        },
        "speech_start_to_first_partial_sec": {
            "p50": round(pct(firsts, 50), 3),
            "n": len(firsts),
        },
    }
    if probe:
        report["http_under_load"] = probe.report()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
