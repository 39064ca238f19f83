#!/bin/bash
# What the HTTP front end costs against gRPC: one `loraserve serve`, one `loractl bench` trace at
# saturation (all requests at once), sent RUNS times over each transport, alternating (gRPC,
# HTTP, gRPC, HTTP, ...) so both see the same machine; prints each run, both medians and their
# ratio (HTTP tokens/s ÷ gRPC tokens/s).
#
#   bench/http_bench.sh BUILD_DIR MODEL_DIR [TASK=ADAPTER_DIR ...]
#
# Environment: REQUESTS (256), PROMPT_LEN (16:64), OUTPUT_LEN (16:64), ZIPF (1.0), SEED (1),
# RUNS (3), ENGINE_FLAGS (extra serve flags, e.g. "--max-batch-size 64").
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
for spec in "$@"; do
  tasks+=("${spec%%=*}")
  preload+=(--preload "$spec")
done
task_list=$(printf '%s\n' "${tasks[@]+"${tasks[@]}"}" | sort | paste -sd, -)
trace=(--requests "${REQUESTS:-256}" --prompt-len "${PROMPT_LEN:-16:64}"
       --output-len "${OUTPUT_LEN:-16:64}" --zipf "${ZIPF:-1.0}" --seed "${SEED:-1}" --include-base)
if [ -n "$task_list" ]; then trace+=(--tasks "$task_list"); fi
read -r -a engine_flags <<< "${ENGINE_FLAGS:-}"
vocab=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$model/config.json")

"$build/server/loraserve" serve --model "$model" "${preload[@]+"${preload[@]}"}" \
  "${engine_flags[@]+"${engine_flags[@]}"}" --max-queue 100000 --listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --http-threads 1024 \
  --ready-file "$work/ready" --log-level warn 2> "$work/server.log" &
server_pid=$!
for _ in $(seq 600); do [ -f "$work/ready" ] && break; sleep 0.1; done
[ -f "$work/ready" ] || { cat "$work/server.log"; exit 1; }
field() { $py -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
address=$(field "$work/ready" listen)
http=$(field "$work/ready" http_listen)

grpc_rates=()
http_rates=()
for run in $(seq "${RUNS:-3}"); do
  for transport in grpc http; do
    flags=()
    if [ "$transport" = http ]; then flags=(--http "$http"); fi
    "$build/client/loractl" --server "$address" --json bench --rate 0 --vocab-size "$vocab" \
      --no-progress "${flags[@]+"${flags[@]}"}" "${trace[@]}" > "$work/bench.json"
    rate=$(field "$work/bench.json" tokens_per_s)
    ok=$(field "$work/bench.json" succeeded)
    echo "$transport run $run: $rate tokens/s, $ok ok ($(cat "$work/bench.json"))"
    if [ "$transport" = grpc ]; then grpc_rates+=("$rate"); else http_rates+=("$rate"); fi
  done
done
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=

$py - "${#grpc_rates[@]}" "${grpc_rates[@]}" "${http_rates[@]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
grpc = [float(x) for x in sys.argv[2:2 + n]]
http = [float(x) for x in sys.argv[2 + n:]]
g, h = statistics.median(grpc), statistics.median(http)
print(f"gRPC {g:.1f} tokens/s, HTTP {h:.1f} tokens/s (medians of {n}): HTTP / gRPC = {h / g:.3f}")
PY
