#!/bin/bash
# The RPC layer's cost: a `loractl bench` trace at saturation (all requests at once) against
# `loraserve serve`, then the same trace replayed in-process by server_bench (no gRPC), with the
# same engine flags; prints both tokens/s (medians of RUNS) and their ratio.
#
#   bench/server_bench.sh BUILD_DIR MODEL_DIR [TASK=ADAPTER_DIR ...]
#
# Environment: REQUESTS (256), PROMPT_LEN (16:64), OUTPUT_LEN (16:64), ZIPF (1.0), SEED (1),
# RUNS (3), ENGINE_FLAGS (extra flags for both, e.g. "--max-batch-size 64").
set -euo pipefail
build=$1
model=$2
shift 2
py=/usr/bin/python3
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

tasks=()
preload=()
adapters=()
for spec in "$@"; do
  tasks+=("${spec%%=*}")
  preload+=(--preload "$spec")
  adapters+=(--adapter "$spec")
done
task_list=$(printf '%s\n' "${tasks[@]+"${tasks[@]}"}" | sort | paste -sd, -)
trace=(--requests "${REQUESTS:-256}" --prompt-len "${PROMPT_LEN:-16:64}"
       --output-len "${OUTPUT_LEN:-16:64}" --zipf "${ZIPF:-1.0}" --seed "${SEED:-1}" --include-base)
if [ -n "$task_list" ]; then trace+=(--tasks "$task_list"); fi
read -r -a engine_flags <<< "${ENGINE_FLAGS:-}"
vocab=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$model/config.json")

"$build/cli/loraserve" serve --model "$model" "${preload[@]+"${preload[@]}"}" \
  "${engine_flags[@]+"${engine_flags[@]}"}" --max-queue 100000 --listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 --ready-file "$work/ready" --log-level warn 2> "$work/server.log" &
server_pid=$!
for _ in $(seq 600); do [ -f "$work/ready" ] && break; sleep 0.1; done
[ -f "$work/ready" ] || { cat "$work/server.log"; exit 1; }
address=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['listen'])" "$work/ready")

server_rates=()
for run in $(seq "${RUNS:-3}"); do
  "$build/client/loractl" --server "$address" --json bench --rate 0 --vocab-size "$vocab" \
    --no-progress "${trace[@]}" > "$work/bench.json"
  rate=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['tokens_per_s'])" "$work/bench.json")
  echo "server run $run: $rate tokens/s ($(cat "$work/bench.json"))"
  server_rates+=("$rate")
done
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=

"$build/bench/server_bench" --model "$model" "${adapters[@]+"${adapters[@]}"}" \
  "${engine_flags[@]+"${engine_flags[@]}"}" --max-queue 100000 --runs "${RUNS:-3}" --json \
  "${trace[@]}" > "$work/inproc.json"
echo "in-process: $(cat "$work/inproc.json")"
$py - "$work/inproc.json" "${server_rates[@]}" <<'PY'
import json, statistics, sys
inproc = json.load(open(sys.argv[1]))["tokens_per_s"]
server = statistics.median(float(x) for x in sys.argv[2:])
print(f"server {server:.1f} tokens/s / in-process {inproc:.1f} tokens/s = {server / inproc:.3f}")
PY
