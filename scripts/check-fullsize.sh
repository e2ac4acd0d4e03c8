#!/usr/bin/env bash
# End-to-end check of the studio at FULL model size on the CPU, with nothing real downloaded:
#   1. full-size random weights in the official formats (model/tools/make_full_size_weights.py,
#      make_full_size_insightface.py), in the real Hub repository's layout, into a temp folder;
#   2. the fake Hub serves that tree as fudan-generative-ai/hallo2 (exactly the real file list);
#   3. the studio starts with the real profile (configs/inference/long.yaml at SIZE x SIZE),
#      downloads through hf-hub, converts net.pth and loads;
#   4. one job through the REST API; its MP4 is checked with ffprobe.
# Prints the load time, the job time and the server's peak RSS, then stops everything and deletes
# the temp folder (~22 GB at its peak: the tree, the HF cache copy and the f32 net.pth cache).
#
#   ./scripts/check-fullsize.sh
# Environment: SIZE (64, a multiple of 64; 128 makes the job ~10 min on 2 cores), STEPS (1),
# TMPDIR (where the temp folder goes), KEEP=1 (keep it), LOAD_TIMEOUT / JOB_TIMEOUT (s, 900 each).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE="${SIZE:-64}"
STEPS="${STEPS:-1}"
LOAD_TIMEOUT="${LOAD_TIMEOUT:-900}"
JOB_TIMEOUT="${JOB_TIMEOUT:-900}"
NEED_BYTES=24000000000
REPO=fudan-generative-ai/hallo2
IMAGE=model/tests/fixtures/face/astronaut.png
SPEECH=model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav
AUDIO_SECONDS=2

fail() {
  echo "check-fullsize: FAILED: $*" >&2
  exit 1
}
step() { echo "== $*"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
# json FILE EXPR: EXPR evaluated with `d` = the parsed file.
json() { python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print($2)" "$1"; }

for tool in python3 curl ffprobe cargo; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done
(( SIZE % 64 == 0 && SIZE > 0 )) || fail "SIZE=$SIZE must be a positive multiple of 64"

START=$(now)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hallo2-fullsize.XXXXXX")
HUB_PID=""
SERVER_PID=""

stop() {  # stop PID NAME: SIGTERM, then SIGKILL after 30 s
  local pid=$1 name=$2
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  echo "$name did not stop on SIGTERM within 30 s: SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if (( rc != 0 )) && [ -f "$WORK/server.log" ]; then
    echo "--- last lines of the server log ($WORK/server.log)" >&2
    tail -n 30 "$WORK/server.log" >&2 || true
  fi
  [ -n "$SERVER_PID" ] && stop "$SERVER_PID" server
  [ -n "$HUB_PID" ] && stop "$HUB_PID" fake_hub
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

AVAIL=$(df -B1 --output=avail "$WORK" | tail -n 1)
(( AVAIL >= NEED_BYTES )) ||
  fail "$WORK has $((AVAIL / 1000000000)) GB free; the check needs $((NEED_BYTES / 1000000000)) GB (set TMPDIR)"

step "tools: .venv-tools with numpy and onnx"
if [ ! -x .venv-tools/bin/python ]; then
  python3 -m venv .venv-tools
fi
PY=.venv-tools/bin/python
"$PY" -c 'import numpy, onnx' 2>/dev/null || "$PY" -m pip install --quiet numpy onnx

step "build: server and fake_hub (dev profile)"
cargo build --quiet -p server --bin server --bin fake_hub

step "1. full-size random weights -> $WORK/repo (the repository's root is pretrained_models/)"
T=$(now)
"$PY" model/tools/make_full_size_weights.py "$WORK/repo"
"$PY" model/tools/make_full_size_insightface.py "$WORK/repo"
ROOT="$WORK/repo/pretrained_models"
# Kim_Vocal_2: the tests' stand-in network with its signature (the processing around it is
# full-size; a network of the real size needs torch: scripts/bench-vocals.sh times that).
mkdir -p "$ROOT/audio_separator"
cp model/tests/fixtures/vocals/stand_in_mdx.onnx "$ROOT/audio_separator/Kim_Vocal_2.onnx"
cp model/tests/fixtures/vocals/mdx_model_data.json "$ROOT/audio_separator/mdx_model_data.json"
for f in hallo2/net.pth stable-diffusion-v1-5/unet/config.json sd-vae-ft-mse/config.json \
  sd-vae-ft-mse/diffusion_pytorch_model.safetensors wav2vec/wav2vec2-base-960h/config.json \
  wav2vec/wav2vec2-base-960h/model.safetensors face_analysis/models/scrfd_10g_bnkps.onnx \
  face_analysis/models/glintr100.onnx audio_separator/Kim_Vocal_2.onnx \
  audio_separator/mdx_model_data.json; do
  [ -s "$ROOT/$f" ] || fail "the weight tools did not write $f"
done
WEIGHTS_S=$(since "$T")
echo "weights written in ${WEIGHTS_S} s ($(du -sh "$ROOT" | cut -f1))"

step "2. fake Hub on $ROOT"
target/debug/fake_hub --root "$ROOT" --layout model/tests/fixtures/hub-layout.md --repo "$REPO" \
  --port 0 >"$WORK/fake_hub.out" 2>"$WORK/fake_hub.err" &
HUB_PID=$!
ENDPOINT=""
for _ in $(seq 60); do
  ENDPOINT=$(sed -n 's/^HF_ENDPOINT=//p' "$WORK/fake_hub.out")
  [ -n "$ENDPOINT" ] && break
  kill -0 "$HUB_PID" 2>/dev/null || fail "fake_hub exited: $(cat "$WORK/fake_hub.err")"
  sleep 0.5
done
[ -n "$ENDPOINT" ] || fail "fake_hub printed no HF_ENDPOINT within 30 s"
echo "HF_ENDPOINT=$ENDPOINT"

step "3. studio: long.yaml at ${SIZE}x${SIZE}, ${STEPS} step(s), f32 on the CPU"
sed -e "s/^    width: 512$/    width: $SIZE/" -e "s/^    height: 512$/    height: $SIZE/" \
  -e "s/^inference_steps: .*/inference_steps: $STEPS/" configs/inference/long.yaml >"$WORK/long.yaml"
[ "$(grep -cE "^    (width|height): $SIZE$|^inference_steps: $STEPS$" "$WORK/long.yaml")" = 3 ] ||
  fail "configs/inference/long.yaml no longer has the expected data.source_image / inference_steps lines"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
cat >"$WORK/server.toml" <<EOF
bind = "127.0.0.1:$PORT"
load = "eager"
device = "cpu"
dtype = "f32"
inference = "$WORK/long.yaml"
cache_dir = "$WORK/cache"
log_dir = "$WORK/logs"
data_dir = "$WORK/data"

[weights]
source = "hub"
repo = "$REPO"
revision = "main"
subfolder = ""
endpoint = "$ENDPOINT"
hf_cache = "$WORK/hf"
offline = false

[warmup]
enabled = false
EOF
T=$(now)
env -u HF_TOKEN target/debug/server --config "$WORK/server.toml" \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

step "4. waiting for ready (download + convert + load; at most ${LOAD_TIMEOUT} s)"
DEADLINE=$(( $(date +%s) + LOAD_TIMEOUT ))
LAST=""
while :; do
  kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited while loading"
  CODE=$(curl -s -o "$WORK/ready.json" -w '%{http_code}' "$URL/health/ready?verbose" || true)
  [ "$CODE" = 200 ] && break
  if [ "$CODE" = 503 ]; then
    STATE=$(json "$WORK/ready.json" "d['state'] + (' ' + d['stage'] if d.get('stage') else '')")
    [ "$STATE" != "$LAST" ] && echo "  $(since "$T") s: $STATE" && LAST=$STATE
    [ "${STATE%% *}" = failed ] &&
      fail "loading failed: $(json "$WORK/ready.json" "d.get('error'), '| hint:', d.get('hint')")"
  fi
  (( $(date +%s) < DEADLINE )) || fail "not ready after ${LOAD_TIMEOUT} s (last: ${LAST:-no answer})"
  sleep 1
done
LOAD_S=$(since "$T")
json "$WORK/ready.json" "'\n'.join(f\"  {s['stage']:>15}: {s.get('elapsed_ms', 0) / 1000:7.1f} s\" for s in d.get('stages') or [])"
echo "ready after ${LOAD_S} s (process start -> /health/ready 200)"

step "5. one job: $IMAGE + ${AUDIO_SECONDS} s of speech, steps=$STEPS, seed=42"
python3 - "$SPEECH" "$WORK/speech.wav" "$AUDIO_SECONDS" <<'EOF'
import sys, wave
src, dst, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
with wave.open(src) as r:
    params = r.getparams()
    frames = r.readframes(int(seconds * r.getframerate()))
with wave.open(dst, "wb") as w:
    w.setparams(params)
    w.writeframes(frames)
EOF
T=$(now)
CODE=$(curl -s -o "$WORK/submit.json" -w '%{http_code}' -F "image_file=@$IMAGE" \
  -F "audio_file=@$WORK/speech.wav" -F "steps=$STEPS" -F seed=42 "$URL/api/v1/inference/hallo2" || true)
[ "$CODE" = 202 ] || fail "submission answered $CODE: $(cat "$WORK/submit.json" 2>/dev/null)"
TASK=$(json "$WORK/submit.json" "d['task_id']")
echo "task $TASK"
DEADLINE=$(( $(date +%s) + JOB_TIMEOUT ))
LAST=""
while :; do
  kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited during the job"
  curl -sf -o "$WORK/task.json" "$URL/api/v1/tasks/$TASK" || fail "GET /api/v1/tasks/$TASK failed"
  STATUS=$(json "$WORK/task.json" "d['status']")
  MSG=$(json "$WORK/task.json" "d['status_message']")
  [ "$MSG" != "$LAST" ] && echo "  $(since "$T") s: $STATUS: $MSG" && LAST=$MSG
  case "$STATUS" in
    completed) break ;;
    failed | cancelled) fail "job $STATUS: $(json "$WORK/task.json" "d.get('error')")" ;;
  esac
  (( $(date +%s) < DEADLINE )) || fail "job not done after ${JOB_TIMEOUT} s"
  sleep 2
done
JOB_S=$(since "$T")
curl -sf -o "$WORK/job.json" "$URL/api/jobs/$TASK" || fail "GET /api/jobs/$TASK failed"
echo "job done in ${JOB_S} s ($(json "$WORK/job.json" "', '.join(f'{k} {v:.1f} s' for k, v in d.get('timings', []))"))"
if grep -q "no face found" "$WORK/server.log"; then
  echo "InsightFace found no face: the job ran with the zero identity embedding"
else
  echo "InsightFace found a face (identity embedding from the ArcFace stand-in)"
fi

step "video: ffprobe"
curl -sf -o "$WORK/output.mp4" "$URL/api/v1/tasks/$TASK/video" || fail "GET /api/v1/tasks/$TASK/video failed"
ffprobe -v error -show_streams -show_format -of json "$WORK/output.mp4" >"$WORK/probe.json" ||
  fail "ffprobe cannot read the video"
python3 - "$WORK/probe.json" "$AUDIO_SECONDS" <<'EOF' || fail "the video is not what the studio promises"
import json, sys
probe, audio_s = json.load(open(sys.argv[1])), float(sys.argv[2])
video = [s for s in probe["streams"] if s["codec_type"] == "video"]
audio = [s for s in probe["streams"] if s["codec_type"] == "audio"]
problems = []
if len(video) != 1 or len(audio) != 1:
    sys.exit(f"expected one video and one audio stream, got {len(video)} and {len(audio)}")
v, a = video[0], audio[0]
for what, got, want in [("video codec", v["codec_name"], "h264"), ("pixel format", v["pix_fmt"], "yuv420p"),
                        ("frame rate", v["avg_frame_rate"], "25/1"), ("audio codec", a["codec_name"], "opus")]:
    if got != want:
        problems.append(f"{what} {got}, expected {want}")
durations = {"video": float(v["duration"]), "audio": float(a["duration"]),
             "container": float(probe["format"]["duration"])}
for what, d in durations.items():
    if abs(d - audio_s) > 0.04:
        problems.append(f"{what} duration {d:.3f} s, expected {audio_s:.3f} ± 0.04 s")
print(f"{v['codec_name']} {v['pix_fmt']} {v['width']}x{v['height']} {v['avg_frame_rate']} fps "
      f"{v.get('nb_frames', '?')} frames, {a['codec_name']} {a['sample_rate']} Hz {a['channels']} ch; "
      + ", ".join(f"{k} {d:.3f} s" for k, d in durations.items()))
if problems:
    sys.exit("; ".join(problems))
EOF

RSS_KB=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SERVER_PID/status")
step "6. stopping"
stop "$SERVER_PID" server
SERVER_PID=""
stop "$HUB_PID" fake_hub
HUB_PID=""

echo
echo "full-size check passed (${SIZE}x${SIZE}, ${STEPS} step(s), f32, CPU)"
echo "  weights written  ${WEIGHTS_S} s"
echo "  load             ${LOAD_S} s (download + convert + load)"
echo "  job              ${JOB_S} s (${AUDIO_SECONDS} s of speech)"
echo "  server peak RSS  $(python3 -c "print(f'{$RSS_KB / 1e6:.2f}')") GB (VmHWM)"
echo "  total            $(since "$START") s"
