#!/usr/bin/env python3
"""End of speech → final over WebSocket and over gRPC, on the same audio,
measured the same way by one client, to show what the WebSocket bridge adds.

Each file (16 kHz mono WAV; recorded speech, e.g. the dev set) is streamed at
real time in 100 ms chunks, with 1 s of silence after it, once over
`/ws/stream` and once over gRPC StreamingRecognize, alternating. For every
final, latency = when it arrived − when the chunk holding its end_sec sample
was sent (what a caption viewer waits for once the speaker stops). Prints
p50/p95/max per transport and the difference of the medians.

Needs `websockets`, `grpcio` and `grpcio-tools` (a throwaway venv will do):

  python3 -m venv /tmp/benchvenv
  /tmp/benchvenv/bin/pip install websockets grpcio grpcio-tools
  /tmp/benchvenv/bin/python scripts/bench-transports.py \
      --grpc 127.0.0.1:50051 --ws 127.0.0.1:8001 ~/.cache/stt/devset/en/*.wav
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave

RATE = 16000
CHUNK = 1600  # samples: 100 ms
TAIL = b"\0\0" * RATE  # 1 s of silence


def pcm16(path):
    with wave.open(path, "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            sys.exit(f"{path}: need 16 kHz mono 16-bit PCM")
        return w.readframes(w.getnframes()) + TAIL


def chunks(pcm):
    step = CHUNK * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def latencies(finals, sent):
    """finals: [(arrival, end_sec)]; sent: send time of each chunk."""
    out = []
    for arrival, end_sec in finals:
        k = min(int(end_sec * RATE) // CHUNK, len(sent) - 1)
        out.append(arrival - sent[k])
    return out


async def over_ws(url, pcm):
    import websockets

    sent, finals = [], []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "data": {"sample_rate": RATE, "language_code": "en"}}))
        frame = json.loads(await ws.recv())
        assert frame["type"] == "session", frame

        async def reader():
            async for msg in ws:
                f = json.loads(msg)
                if f["type"] == "result" and f["is_final"]:
                    finals.append((time.monotonic(), f["end_sec"]))
                elif f["type"] == "error":
                    raise RuntimeError(f)

        task = asyncio.create_task(reader())
        start = time.monotonic()
        for i, c in enumerate(chunks(pcm)):
            await asyncio.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
            await ws.send(c)
            sent.append(time.monotonic())
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(task, 60)
    return latencies(finals, sent)


def grpc_stubs(proto):
    out = tempfile.mkdtemp(prefix="stt-stubs-")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{os.path.dirname(proto)}",
         f"--python_out={out}", f"--grpc_python_out={out}", proto],
        check=True,
    )
    sys.path.insert(0, out)
    import stt_pb2
    import stt_pb2_grpc

    return stt_pb2, stt_pb2_grpc


def over_grpc(stub, pb, pcm, n):
    sid = f"bench-grpc-{os.getpid()}-{n}"
    stub.CreateSession(pb.SessionRequest(session_id=sid, language_code="en"))
    sent, finals = [], []
    lock = threading.Lock()

    def requests():
        start = time.monotonic()
        for i, c in enumerate(chunks(pcm)):
            time.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
            with lock:
                sent.append(time.monotonic())
            yield pb.AudioChunk(pcm16=c, sample_rate=RATE, session_id=sid)
        yield pb.AudioChunk(is_final=True, session_id=sid)

    for r in stub.StreamingRecognize(requests(), metadata=[("session-id", sid)]):
        if r.is_final:
            finals.append((time.monotonic(), r.end_sec))
    with lock:
        return latencies(finals, sent)


def summary(name, xs):
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    print(f"{name:10} finals {len(xs):4}  p50 {statistics.median(xs) * 1000:7.1f} ms"
          f"  p95 {p95 * 1000:7.1f} ms  max {xs[-1] * 1000:7.1f} ms")
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grpc", default="127.0.0.1:50051")
    ap.add_argument("--ws", default="127.0.0.1:8001")
    ap.add_argument("--proto", default=os.path.join(os.path.dirname(__file__), "..", "proto", "stt.proto"))
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()

    import grpc

    pb, pb_grpc = grpc_stubs(os.path.abspath(a.proto))
    stub = pb_grpc.STTBackendStub(grpc.insecure_channel(a.grpc))
    ws_lat, grpc_lat = [], []
    for n, path in enumerate(a.files):
        pcm = pcm16(path)
        ws_lat += asyncio.run(over_ws(f"ws://{a.ws}/ws/stream", pcm))
        grpc_lat += over_grpc(stub, pb, pcm, n)
        print(f"[{n + 1}/{len(a.files)}] {os.path.basename(path)}", file=sys.stderr)
    w = summary("websocket", ws_lat)
    g = summary("grpc", grpc_lat)
    print(f"WebSocket − gRPC, p50: {(w - g) * 1000:+.1f} ms")


if __name__ == "__main__":
    main()
