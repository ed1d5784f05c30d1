#!/usr/bin/env bash
# WER and flush → final latency on the recorded English dev set
# (scripts/devset.py fetch), offline and through a running `stt serve`.
#
#   scripts/bench-devset.sh [--server HOST:PORT] [--model NAME] [--limit N] [--out DIR] [--stt PATH]
#
#   --server  a running `stt serve` (default 127.0.0.1:50051)
#   --model   the model `stt transcribe` loads (default tiny.en)
#   --limit   only the first N files of refs.tsv, for a quick check (0 = all)
#   --out     where the files below go (default: a new temporary directory)
#   --stt     the stt binary (default: target/release/stt of this checkout)
#
# Offline: one `stt transcribe --json --decode-profile realtime` over the
# files (the profile the server's finals use by default, so the two WERs
# differ by streaming, not by decoding). Through the server: `stt file --json
# --metrics` per file, one at a time, at real-time pace, so the figures are
# what one live caller sees. --model names the offline model; the server
# serves whatever it was started with, so start it with the same one.
#
# Flush → final: each dev-set file is one utterance, and most end sooner after
# their last word than the server's VAD silence, so the flush (the last chunk,
# which carries is_final) is what closes them; the final that arrives after it
# measures how long a caller waits once the audio has ended. Files that VAD
# closed first have no such final and are counted apart.
#
# Writes to --out: refs.tsv (the files
# used), hyps_offline.tsv, hyps_server.tsv, latency_flush_final.txt (seconds,
# one per file that got a final after the flush), server/NAME.jsonl (the
# client's raw output) and summary.md (the table printed at the end).
set -euo pipefail

server=127.0.0.1:50051
model=tiny.en
limit=0
out=
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stt=$root/target/release/stt
# A sub-second chunk keeps the flush → final figure fine-grained; passed
# explicitly so no client YAML can change what the arithmetic below assumes.
chunk_ms=100

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "bench-devset: error: $*" >&2; exit 1; }
say() { echo "[bench-devset] $*" >&2; }
need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --server) need_value "$@"; server=$2; shift 2 ;;
    --model) need_value "$@"; model=$2; shift 2 ;;
    --limit) need_value "$@"; limit=$2; shift 2 ;;
    --out) need_value "$@"; out=$2; shift 2 ;;
    --stt) need_value "$@"; stt=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $limit =~ ^[0-9]+$ ]] || die "--limit must be a whole number, got '$limit'"

devset_py=$root/scripts/devset.py
# The same location devset.py builds the set in.
devset=${STT_DEVSET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stt/devset}/en
if [[ ! -s $devset/refs.tsv ]]; then
  die "no dev set at $devset; build it with: python3 scripts/devset.py fetch"
fi
command -v "$stt" >/dev/null || die "no stt binary at $stt (cargo build --release, or pass --stt)"
command -v python3 >/dev/null || die "python3 is needed for WER and the summary"

# A dead address would otherwise show up as one client error per file.
host=${server#http://}; host=${host%/}
port=${host##*:}; host=${host%:*}
if ! timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
  die "nothing answers at $server; start one with: $stt serve (or pass --server HOST:PORT)"
fi

if [[ -z $out ]]; then
  out=$(mktemp -d "${TMPDIR:-/tmp}/bench-devset.XXXXXX")
fi
mkdir -p "$out/server"

# WER is over the files used, so --limit must cut the references too
# (devset.py counts a file without a hypothesis as all deleted).
if ((limit > 0)); then head -n "$limit" "$devset/refs.tsv"; else cat "$devset/refs.tsv"; fi \
  | grep -v '^[[:space:]]*$' > "$out/refs.tsv"
mapfile -t names < <(cut -f1 "$out/refs.tsv")
n=${#names[@]}
wavs=()
for name in "${names[@]}"; do
  [[ -f $devset/$name ]] || die "$devset/$name is listed in refs.tsv but missing; run: python3 scripts/devset.py fetch --force"
  wavs+=("$devset/$name")
done
say "$n files from $devset; output in $out"

# --- offline: one process, so the model loads once ---
# transcribe reads config/model.yaml from the working directory, and falls
# back to built-in profiles without one; name this checkout's from anywhere.
profiles=()
[[ -f $root/config/model.yaml ]] && profiles=(--model-config "$root/config/model.yaml")
say "offline: stt transcribe --model $model --decode-profile realtime ($n files)"
"$stt" transcribe --json --model "$model" --decode-profile realtime "${profiles[@]}" "${wavs[@]}" \
  > "$out/offline.jsonl" || die "stt transcribe failed (see above)"

# --- through the server: one file at a time, at real-time pace ---
client_errors=0
for i in "${!names[@]}"; do
  name=${names[$i]}
  jsonl=$out/server/${name%.wav}.jsonl
  if "$stt" file --server "$server" --json --metrics --chunk-ms "$chunk_ms" "${wavs[$i]}" \
      > "$jsonl" 2> "$jsonl.err"; then
    rm -f "$jsonl.err"
    say "server: [$((i + 1))/$n] $name: $(grep -c '"is_final":true' "$jsonl" || true) finals"
  else
    client_errors=$((client_errors + 1))
    # its "error:" line says what failed; a "hint:" line may follow
    say "server: [$((i + 1))/$n] $name: stt file failed: $(grep -m1 '^error' "$jsonl.err" || tail -n 1 "$jsonl.err")"
  fi
done

# --- hypotheses, latency and the loop count; then WER and the table ---
python3 - "$out" "$chunk_ms" "$model" "$server" "$client_errors" "$devset_py" "$devset" <<'PY'
import json, re, subprocess, sys, wave
from pathlib import Path

out, chunk_ms, model, server, client_errors, devset_py, devset = (
    Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], Path(sys.argv[7]))
RATE = 16000  # the dev set's rate, which the client sends unchanged
per_chunk = chunk_ms * RATE // 1000
names = [line.split("\t")[0] for line in (out / "refs.tsv").read_text().splitlines()]


def json_lines(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.startswith("{")] if path.exists() else []


def one_line(text):  # a tab or newline would break the tsv
    return " ".join(text.split())


def looped(text):
    """True when some run of >= 4 words is immediately said again: the decoder's
    repetition loop, which a real sentence almost never does."""
    w = re.sub(r"[^\w\s']", " ", text.lower()).split()
    return any(w[i:i + n] == w[i + n:i + 2 * n]
               for n in range(4, len(w) // 2 + 1) for i in range(len(w) - 2 * n + 1))


def pct(values, p):  # as bench-latency.py: linear between the closest ranks
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


offline = {Path(o["file"]).name: o for o in json_lines(out / "offline.jsonl")}
(out / "hyps_offline.tsv").write_text(
    "".join(f"{n}\t{one_line(offline[n]['text'])}\n" for n in names if n in offline))
offline_segments = [s["text"] for o in offline.values() for s in o.get("segments", [])]

server_hyps, flush_final, finals_all, no_flush_final = [], [], [], []
for name in names:
    lines = json_lines(out / "server" / (name[:-4] + ".jsonl"))
    metrics = next((l["metrics"] for l in lines if "metrics" in l), None)
    if metrics is None:  # the client failed; WER counts the file as all deleted
        continue
    finals = [l for l in lines if l.get("is_final")]
    finals_all += [f["text"] for f in finals]
    server_hyps.append(f"{name}\t{one_line(' '.join(f['text'] for f in finals))}\n")
    # The flush is the last chunk, and at real-time pace chunk k leaves k chunk
    # periods after the first. A final's latency_sec runs from the send of the
    # chunk holding the sample at its end_sec (the first chunk reaching it, as
    # the client's SendLog finds it); moving that start forward by the chunks
    # between there and the flush gives flush → final, exact when the final
    # ends in the last chunk, as a flushed one does.
    with wave.open(str(devset / name)) as w:
        last_chunk = max(1, -(-w.getnframes() // per_chunk)) - 1
    after = [f for f in finals
             if f.get("latency_sec") is not None and f["received_sec"] >= last_chunk * chunk_ms / 1000]
    if not after:
        no_flush_final.append(name)  # VAD closed it before the end, or nothing was heard
        continue
    f = after[-1]
    end_chunk = min(last_chunk, max(0, -(-round(f["end_sec"] * RATE) // per_chunk) - 1))
    flush_final.append(f["latency_sec"] - (last_chunk - end_chunk) * chunk_ms / 1000)
(out / "hyps_server.tsv").write_text("".join(server_hyps))
(out / "latency_flush_final.txt").write_text("".join(f"{v:.3f}\n" for v in flush_final))


def wer(hyps):
    done = subprocess.run([sys.executable, devset_py, "wer", "--refs", str(out / "refs.tsv"),
                           "--hyps", str(out / hyps), "--json"], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench-devset: error: devset.py wer failed: {done.stderr.strip()}")
    return json.loads(done.stdout)["total"]


w_off, w_srv = wer("hyps_offline.tsv"), wer("hyps_server.tsv")
ms = lambda v: f"{v:.3f} s"
rows = [
    ("files", f"{len(names)} ({w_off['words']} reference words)"),
    (f"WER offline (`stt transcribe`, {model}, realtime profile)",
     f"{100 * w_off['wer']:.2f}% ({w_off['missing']} files without text)"),
    (f"WER through the server (`stt file`, {server}, real time)",
     f"{100 * w_srv['wer']:.2f}% ({w_srv['missing']} files without text)"),
    ("WER difference (server − offline)", f"{100 * (w_srv['wer'] - w_off['wer']):+.2f} points"),
    ("flush → final p50 / p95 / max",
     f"{ms(pct(flush_final, 50))} / {ms(pct(flush_final, 95))} / {ms(max(flush_final))} (n={len(flush_final)})"
     if flush_final else "- (no final after a flush)"),
    ("files with no final after the flush", f"{len(no_flush_final)}" + (
        f" ({', '.join(no_flush_final[:5])}{', …' if len(no_flush_final) > 5 else ''})" if no_flush_final else "")),
    ("finals with a repeated ≥4-word run (loops)",
     f"server {sum(map(looped, finals_all))} of {len(finals_all)}; "
     f"offline {sum(map(looped, offline_segments))} of {len(offline_segments)} segments"),
    ("client errors", str(client_errors)),
]
table = "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
(out / "summary.md").write_text(table)
print(table, end="")
PY
