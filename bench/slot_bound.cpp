// slot_bound: the fewest engine steps a `loractl bench` trace can be served in, whatever the
// scheduler, when a step holds at most --max-batch-size sequences and requests of at most
// --max-device-adapters distinct adapters (device slots). Each request generates its max_tokens
// one per step, so an adapter takes part in at least as many steps as its longest request
// generates tokens; with S slots, steps >= (sum over adapters of that) / S. With B sequences a
// step, steps >= (all generated tokens) / B. (Prefill steps come on top of both.) It tells a
// shortfall of the scheduler from one the trace and the slot count impose
// (bench/on_demand_bench.sh prints the steps the server took).
//
//   slot_bound --tasks 1000 [--requests 512] [--zipf 1.0] [--prompt-len 16:64]
//              [--output-len 16:64] [--seed 1] [--batch 32] [--slots 8,16,32]
#include <CLI/CLI.hpp>
#include <map>

#include "client/trace.h"

int main(int argc, char** argv) {
  using namespace loraserve;
  client::TraceOptions o;
  int32_t tasks = 5;
  int32_t batch = 32;
  std::vector<int32_t> slots = {8, 16, 32};
  std::string prompt_len = "16:64", output_len = "16:64";
  CLI::App app("The fewest steps a loractl bench trace takes with B sequences and S slots a step");
  app.add_option("--tasks", tasks, "Tasks task0 .. task<N-1>, most popular first")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--requests", o.requests, "Requests in the trace")->capture_default_str();
  app.add_option("--zipf", o.zipf, "Zipf exponent of task popularity")->capture_default_str();
  app.add_option("--prompt-len", prompt_len, "Prompt lengths MIN:MAX")->capture_default_str();
  app.add_option("--output-len", output_len, "Output lengths MIN:MAX")->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the trace")->capture_default_str();
  app.add_option("--batch", batch, "--max-batch-size")->capture_default_str();
  app.add_option("--slots", slots, "--max-device-adapters values")
      ->delimiter(',')
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  o.vocab_size = 1 << 16;  // prompt ids do not change the bound
  for (int32_t i = 0; i < tasks; ++i) o.tasks.push_back("task" + std::to_string(i));
  Status st = client::parse_range(prompt_len, "--prompt-len", &o.prompt_min, &o.prompt_max);
  if (st.ok()) st = client::parse_range(output_len, "--output-len", &o.output_min, &o.output_max);
  if (!st.ok() || batch <= 0) {
    fmt::print(stderr, "slot_bound: {}\n", st.ok() ? "--batch must be positive" : st.to_string());
    return 1;
  }
  auto trace = client::make_trace(o);
  if (!trace.ok()) {
    fmt::print(stderr, "slot_bound: {}\n", trace.status().to_string());
    return 1;
  }
  std::map<std::string, int64_t> longest;
  int64_t tokens = 0;
  for (const auto& r : *trace) {
    longest[r.task_id] = std::max<int64_t>(longest[r.task_id], r.max_tokens);
    tokens += r.max_tokens;
  }
  int64_t adapter_steps = 0;
  for (const auto& [task, n] : longest) adapter_steps += n;
  fmt::print("{} requests over {} distinct tasks (of {}), {} tokens to generate\n", trace->size(),
             longest.size(), tasks, tokens);
  fmt::print("  {} sequences a step: at least {} steps\n", batch, (tokens + batch - 1) / batch);
  for (int32_t s : slots) {
    if (s <= 0) continue;
    const int64_t by_slots = (adapter_steps + s - 1) / s;
    fmt::print("  {} slots: at least {} steps (together with the batch: {})\n", s, by_slots,
               std::max(by_slots, (tokens + batch - 1) / batch));
  }
  return 0;
}
