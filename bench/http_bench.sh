#!/bin/bash
# What the HTTP front end costs against gRPC: one `loraserve serve`, one `loractl bench` trace at
# saturation (all requests at once), sent RUNS times over each transport, alternating (gRPC,
# HTTP, gRPC, HTTP, ...) so both see the same machine; prints each run, both medians and their
# ratio (HTTP tokens/s ÷ gRPC tokens/s), and the CPU seconds the server and the client spent per
# 1000 generated tokens over each transport (from /proc and the shell's `time`), which a busy
# machine disturbs far less than wall-clock rates.
#
#   bench/http_bench.sh BUILD_DIR MODEL_DIR [TASK=ADAPTER_DIR ...]
#
# Environment: REQUESTS (256), PROMPT_LEN (16:64), OUTPUT_LEN (16:64), ZIPF (1.0), SEED (1),
# RUNS (3), ENGINE_FLAGS (extra serve flags, e.g. "--max-batch-size 64").
set -euo pipefail
build=$1
model=$2
shift 2
source "$(dirname "$0")/lib.sh"

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
vocab=$(json_field "$model/config.json" vocab_size)

start_server "$build" --model "$model" "${preload[@]+"${preload[@]}"}" \
  "${engine_flags[@]+"${engine_flags[@]}"}" --http-listen 127.0.0.1:0 --http-threads 1024
address=$(json_field "$work/ready" listen)
http=$(json_field "$work/ready" http_listen)

# CPU seconds the server has used so far (user + system), from /proc.
server_cpu() {
  awk -v tck="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / tck }' "/proc/$server_pid/stat"
}

rates=()
for run in $(seq "${RUNS:-3}"); do
  for transport in grpc http; do
    flags=()
    if [ "$transport" = http ]; then flags=(--http "$http"); fi
    before=$(server_cpu)
    TIMEFORMAT="%U %S"
    { time "$build/client/loractl" --server "$address" --json bench --rate 0 \
        --vocab-size "$vocab" --no-progress "${flags[@]+"${flags[@]}"}" "${trace[@]}" \
        > "$work/bench.json"; } 2> "$work/client_cpu"
    after=$(server_cpu)
    rate=$(json_field "$work/bench.json" tokens_per_s)
    tokens=$(json_field "$work/bench.json" completion_tokens)
    ok=$(json_field "$work/bench.json" succeeded)
    read -r cu cs < "$work/client_cpu"
    line=$($py -c "import sys; b,a,t,cu,cs=map(float,sys.argv[1:]); print(f'{(a-b)/t*1e3:.3f} {(cu+cs)/t*1e3:.3f}')" \
      "$before" "$after" "$tokens" "$cu" "$cs")
    read -r server_ms client_ms <<< "$line"
    echo "$transport run $run: $rate tokens/s, $ok ok; CPU per 1000 tokens: server $server_ms s, client $client_ms s"
    rates+=("$transport $rate $server_ms $client_ms")
  done
done
stop_server

printf '%s\n' "${rates[@]}" | $py -c '
import statistics, sys
runs = {"grpc": [], "http": []}
for line in sys.stdin:
    t, rate, server, client = line.split()
    runs[t].append((float(rate), float(server), float(client)))
med = {t: [statistics.median(r[i] for r in v) for i in range(3)] for t, v in runs.items()}
g, h = med["grpc"], med["http"]
n = len(runs["grpc"])
print(f"medians of {n}: gRPC {g[0]:.1f} tokens/s, HTTP {h[0]:.1f} tokens/s: HTTP / gRPC = {h[0] / g[0]:.3f}")
print(f"server CPU s per 1000 tokens: gRPC {g[1]:.3f}, HTTP {h[1]:.3f} (HTTP / gRPC = {h[1] / g[1]:.3f}); "
      f"client: gRPC {g[2]:.3f}, HTTP {h[2]:.3f}")
'
