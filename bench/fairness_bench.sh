#!/bin/bash
# Fairness between tasks, as a client sees it: one task floods the server with FLOOD requests at
# once while another sends PROBES requests at PROBE_RATE per second, over `loractl bench
# --tenants`; run once on a server with --fairness vtc and once with --fairness fifo, and the
# probes alone on an idle server (each a fresh `loraserve serve` of the demo model with two of
# its adapters), interleaved RUNS times. Prints each run's per-task TTFT percentiles and
# tokens/s, then the medians: the probe's TTFT p50/p99 under each policy and idle, and the
# flood's throughput ratio (VTC / FIFO).
#
#   bench/fairness_bench.sh BUILD_DIR
#
# Environment: FLOOD (400), PROBES (10), PROBE_RATE (2), PROMPT_LEN (16:64), OUTPUT_LEN (16:64),
# SEED (1), RUNS (3), ENGINE_FLAGS (extra serve flags).
set -euo pipefail
build=$1
root="$(cd "$(dirname "$0")/.." && pwd)"
model="$root/models/demo"
source "$(dirname "$0")/lib.sh"

read -r -a engine_flags <<< "${ENGINE_FLAGS:-}"
vocab=$(json_field "$model/config.json" vocab_size)
flood="${FLOOD:-400}"
probes="${PROBES:-10}"
lengths=(--prompt-len "${PROMPT_LEN:-16:64}" --output-len "${OUTPUT_LEN:-16:64}"
         --seed "${SEED:-1}")
probe=(--tenants "sort=${PROBE_RATE:-2}:$probes")

# One run: a fresh server with fairness $1; its JSON result lands in $2; the trace: the probe,
# and the flood unless $3 is "idle".
run() {
  local tenants=("${probe[@]}")
  [ "${3:-}" = idle ] || tenants+=(--tenants "reverse=0:$flood")
  start_server "$build" --model "$model" --fairness "$1" \
    --preload "reverse=$model/adapters/reverse" --preload "sort=$model/adapters/sort" \
    "${engine_flags[@]+"${engine_flags[@]}"}" --http-listen ""
  address=$(json_field "$work/ready" listen)
  "$build/client/loractl" --server "$address" --json bench --vocab-size "$vocab" --no-progress \
    "${tenants[@]}" "${lengths[@]}" > "$2"
  stop_server
}

for i in $(seq "${RUNS:-3}"); do
  for policy in vtc fifo idle; do
    if [ "$policy" = idle ]; then run vtc "$work/$policy-$i.json" idle; else run "$policy" "$work/$policy-$i.json"; fi
    $py - "$work/$policy-$i.json" "$policy" "$i" << 'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for task, t in sorted(r["per_task"].items()):
    print(f"{sys.argv[2]} run {sys.argv[3]}: {task:8s} {t['succeeded']}/{t['requests']} ok, "
          f"TTFT p50 {t['ttft_ms']['p50']:8.1f} ms p99 {t['ttft_ms']['p99']:8.1f} ms, "
          f"{t['tokens_per_s']:7.1f} tokens/s")
EOF
  done
done

$py - "$work" "${RUNS:-3}" << 'EOF'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
def med(policy, task, f):
    return statistics.median(f(json.load(open(f"{work}/{policy}-{i}.json"))["per_task"][task])
                             for i in range(1, runs + 1))
for policy in ("vtc", "fifo", "idle"):
    p50 = med(policy, "sort", lambda t: t["ttft_ms"]["p50"])
    p99 = med(policy, "sort", lambda t: t["ttft_ms"]["p99"])
    line = f"medians of {runs}, {policy}: probe (sort) TTFT p50 {p50:.1f} ms p99 {p99:.1f} ms"
    if policy != "idle":
        line += f"; flood (reverse) {med(policy, 'reverse', lambda t: t['tokens_per_s']):.1f} tokens/s"
    print(line)
ratio = med("vtc", "reverse", lambda t: t["tokens_per_s"]) / med("fifo", "reverse",
                                                                 lambda t: t["tokens_per_s"])
print(f"flood throughput VTC / FIFO = {ratio:.3f}")
EOF
