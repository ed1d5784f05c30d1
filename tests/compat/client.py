#!/usr/bin/env python3
"""A client of the original (Python) system's kind, for wire-compatibility tests.

It does what the original's clients do and nothing more: stubs generated from
proto/stt.proto with grpcio-tools at run time, CreateSession with a session_id,
then StreamingRecognize with 100 ms PCM16 chunks, the session id as gRPC
metadata `session-id`, and `is_final=True` on the last chunk.

Output (stdout), one JSON object per line:
  {"text", "is_final", "start_sec", "end_sec", "language_code"}  per result
  {"trailers": {key: value, ...}}                                  at the end
On a gRPC error: {"error": {"code": "UNAUTHENTICATED", "details": "ERR1004: ..."}}
on stdout, the same in words on stderr, and exit status 1.

Needs: pip install grpcio grpcio-tools
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from array import array

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def generate_stubs(proto_dir, out_dir):
    """Compiles stt.proto into out_dir and imports the modules."""
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        "-I", proto_dir,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        os.path.join(proto_dir, "stt.proto"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit("error: protoc failed: " + (done.stderr or done.stdout).strip())
    sys.path.insert(0, out_dir)
    import stt_pb2  # noqa: E402  (generated above)
    import stt_pb2_grpc  # noqa: E402
    return stt_pb2, stt_pb2_grpc


def read_pcm16_mono(path):
    """Returns (little-endian PCM16 mono bytes, sample rate). The rate is sent
    as is: the server resamples, as the original's did."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            sys.exit("error: %s: only 16-bit PCM WAV files are supported" % path)
        rate, channels = w.getframerate(), w.getnchannels()
        frames = w.readframes(w.getnframes())
    samples = array("h")
    samples.frombytes(frames)
    if sys.byteorder != "little":
        samples.byteswap()
    if channels > 1:
        samples = array(
            "h",
            (sum(samples[i:i + channels]) // channels for i in range(0, len(samples), channels)),
        )
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes(), rate


def chunks(pb, pcm, rate, chunk_ms, token, session_id, realtime):
    """Yields AudioChunks; the last one carries is_final."""
    step = max(1, rate * chunk_ms // 1000) * 2
    starts = list(range(0, len(pcm), step)) or [0]
    for i, start in enumerate(starts):
        chunk = pb.AudioChunk(
            pcm16=pcm[start:start + step],
            sample_rate=rate,
            is_final=(i == len(starts) - 1),
            session_token=token,
        )
        if session_id:
            chunk.session_id = session_id
        yield chunk
        if realtime:
            time.sleep(chunk_ms / 1000.0)


def fail(err):
    code = err.code().name if err.code() is not None else "UNKNOWN"
    print(json.dumps({"error": {"code": code, "details": err.details()}}), flush=True)
    print("error: %s: %s" % (code, err.details()), file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1:50051", help="host:port")
    ap.add_argument("--wav", required=True, help="16-bit PCM WAV, any rate")
    ap.add_argument("--session-id", default=None, help="default: compat-<uuid>")
    ap.add_argument("--vad-mode", choices=["continue", "auto"], default="continue")
    ap.add_argument("--require-token", action="store_true")
    ap.add_argument("--chunk-ms", type=int, default=100)
    ap.add_argument("--realtime", action="store_true", help="pace chunks at real time")
    ap.add_argument(
        "--chunk-session-id", action="store_true",
        help="also put the session id in every chunk (default: metadata only)",
    )
    ap.add_argument("--proto-dir", default=os.path.join(REPO, "proto"))
    args = ap.parse_args()

    import grpc

    with tempfile.TemporaryDirectory(prefix="stt-compat-") as gen:
        pb, pb_grpc = generate_stubs(args.proto_dir, gen)
        pcm, rate = read_pcm16_mono(args.wav)
        session_id = args.session_id or "compat-" + uuid.uuid4().hex[:12]
        with grpc.insecure_channel(args.server) as channel:
            stub = pb_grpc.STTBackendStub(channel)
            try:
                session = stub.CreateSession(pb.SessionRequest(
                    session_id=session_id,
                    vad_mode=pb.VAD_AUTO_END if args.vad_mode == "auto" else pb.VAD_CONTINUE,
                    require_token=args.require_token,
                ))
            except grpc.RpcError as err:
                fail(err)
            responses = stub.StreamingRecognize(
                chunks(pb, pcm, rate, args.chunk_ms, session.token,
                       session_id if args.chunk_session_id else "", args.realtime),
                metadata=(("session-id", session_id),),
            )
            try:
                for r in responses:
                    print(json.dumps({
                        "text": r.text,
                        "is_final": r.is_final,
                        "start_sec": r.start_sec,
                        "end_sec": r.end_sec,
                        "language_code": r.language_code,
                    }), flush=True)
                trailers = {k: v for k, v in (responses.trailing_metadata() or ())}
            except grpc.RpcError as err:
                fail(err)
            print(json.dumps({"trailers": trailers}), flush=True)


if __name__ == "__main__":
    main()
