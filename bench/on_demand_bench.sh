#!/bin/bash
# Many adapters on disk, loaded on their first request: a `loractl bench` trace at saturation
# (every request at once) whose tasks are Zipf-popular over MANY adapters, against the same trace
# (same seed, prompts and lengths) over FEW adapters, each run on a fresh
# `loraserve serve --adapter-root MODEL_DIR/adapters` (on-demand loading, SLOTS device slots,
# HOST host adapters), runs interleaved A/B; prints each run's tokens/s and on-demand loads and
# evictions and steps (from `loractl stats`), the medians and their ratio, and the fewest steps
# each trace needs with SLOTS slots (bench/slot_bound).
#
#   bench/on_demand_bench.sh BUILD_DIR MODEL_DIR      (MODEL_DIR/adapters/task<i>, i < MANY)
#
# Environment: MANY (1000), FEW (5), SLOTS (8), HOST (64), REQUESTS (512), PROMPT_LEN (16:64),
# OUTPUT_LEN (16:64), ZIPF (1.0), SEED (1), RUNS (3), ENGINE_FLAGS (extra serve flags), WARM (0;
# 1: each server first runs the trace once untimed, so the timed run finds its adapters loaded
# as far as HOST allows: what the loads cost is the difference from WARM=0).
set -euo pipefail
build=$1
model=$2
many=${MANY:-1000}
few=${FEW:-5}
source "$(dirname "$0")/lib.sh"

[ -d "$model/adapters/task$((many - 1))" ] || {
  echo "$model/adapters has fewer than $many adapters (bench/server_bench_model.py --adapters $many)" >&2
  exit 2
}
read -r -a engine_flags <<< "${ENGINE_FLAGS:-}"
vocab=$(json_field "$model/config.json" vocab_size)
tasks_of() { seq 0 $(($1 - 1)) | sed 's/^/task/' | paste -sd, -; }

# One run: a fresh server, the trace over $1 adapters; prints "tokens/s loads evictions steps".
run() {
  start_server "$build" --model "$model" --adapter-root "$model/adapters" \
    --max-device-adapters "${SLOTS:-8}" --max-host-adapters "${HOST:-64}" \
    "${engine_flags[@]+"${engine_flags[@]}"}" --http-listen ""
  local address admin
  address=$(json_field "$work/ready" listen)
  admin=$(json_field "$work/ready" admin_listen)
  local pass
  for pass in $(seq $((1 + ${WARM:-0}))); do
    "$build/client/loractl" --server "$address" --json bench --rate 0 --vocab-size "$vocab" \
      --no-progress --requests "${REQUESTS:-512}" --prompt-len "${PROMPT_LEN:-16:64}" \
      --output-len "${OUTPUT_LEN:-16:64}" --zipf "${ZIPF:-1.0}" --seed "${SEED:-1}" \
      --tasks "$(tasks_of "$1")" > "$work/bench.json"
  done
  "$build/client/loractl" --server "$address" --admin-server "$admin" --json stats > "$work/stats.json"
  stop_server || true
  local failed
  failed=$(($(json_field "$work/bench.json" requests) - $(json_field "$work/bench.json" succeeded)))
  [ "$failed" = "0" ] || { echo "run over $1 adapters: $failed requests failed: $(cat "$work/bench.json")" >&2; exit 1; }
  echo "$(json_field "$work/bench.json" tokens_per_s)" \
    "$(json_field "$work/stats.json" on_demand_loads)" \
    "$(json_field "$work/stats.json" host_adapter_evictions)" \
    "$(json_field "$work/stats.json" steps)"
}

many_rates=()
few_rates=()
for r in $(seq "${RUNS:-3}"); do
  run "$many" > "$work/run"
  read -r rate loads evictions steps < "$work/run"
  echo "run $r: $many adapters: $rate tokens/s ($loads on-demand loads, $evictions host evictions, $steps steps)"
  many_rates+=("$rate")
  run "$few" > "$work/run"
  read -r rate loads evictions steps < "$work/run"
  echo "run $r: $few adapters: $rate tokens/s ($loads on-demand loads, $evictions host evictions, $steps steps)"
  few_rates+=("$rate")
done
# The fewest steps any scheduler needs for each trace with these slots (and the default
# --max-batch-size 32; ENGINE_FLAGS may change it).
for n in "$many" "$few"; do
  "$build/bench/slot_bound" --tasks "$n" --requests "${REQUESTS:-512}" \
    --prompt-len "${PROMPT_LEN:-16:64}" --output-len "${OUTPUT_LEN:-16:64}" --zipf "${ZIPF:-1.0}" \
    --seed "${SEED:-1}" --slots "${SLOTS:-8}"
done
$py - "${#many_rates[@]}" "${many_rates[@]}" "${few_rates[@]}" "$many" "$few" <<'EOF'
import statistics, sys
n = int(sys.argv[1])
many = [float(x) for x in sys.argv[2:2 + n]]
few = [float(x) for x in sys.argv[2 + n:2 + 2 * n]]
m, f = statistics.median(many), statistics.median(few)
print(f"median tokens/s: {sys.argv[-2]} adapters {m:.1f}, {sys.argv[-1]} adapters {f:.1f}; "
      f"ratio {m / f:.3f}")
EOF
