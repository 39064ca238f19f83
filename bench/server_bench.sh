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
source "$(dirname "$0")/lib.sh"

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
vocab=$(json_field "$model/config.json" vocab_size)

start_server "$build" --model "$model" "${preload[@]+"${preload[@]}"}" \
  "${engine_flags[@]+"${engine_flags[@]}"}" --http-listen ""
address=$(json_field "$work/ready" listen)

server_rates=()
for run in $(seq "${RUNS:-3}"); do
  "$build/client/loractl" --server "$address" --json bench --rate 0 --vocab-size "$vocab" \
    --no-progress "${trace[@]}" > "$work/bench.json"
  rate=$(json_field "$work/bench.json" tokens_per_s)
  echo "server run $run: $rate tokens/s ($(cat "$work/bench.json"))"
  server_rates+=("$rate")
done
stop_server

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
