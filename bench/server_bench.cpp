// server_bench: replays a `loractl bench` trace in-process through engine/ (no gRPC), at
// saturation (every request submitted at once), so that the server's tokens/s on the same trace
// can be set against it: the ratio is what the RPC layer costs. The engine runs on its own
// thread, as in the server; this thread submits and waits for the final updates.
//
//   server_bench --model DIR [--adapter TASK=DIR ...] [--tasks a,b] [--include-base]
//                [--requests N] [--zipf S] [--prompt-len A:B] [--output-len A:B] [--seed N]
//                [--runs R] [--json]
// bench/server_bench.sh runs both sides and prints the ratio.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/common_flags.h"
#include "client/trace.h"
#include "engine/loader.h"

namespace {

using namespace loraserve;
using Clock = std::chrono::steady_clock;

struct RunResult {
  double seconds = 0.0;
  uint64_t tokens = 0;
  int32_t failed = 0;
};

// Submits every request of `trace` at once and waits until all have finished.
RunResult replay(engine::Engine& e, const std::vector<client::TraceRequest>& trace) {
  std::mutex mu;
  std::condition_variable cv;
  size_t finished = 0;
  std::atomic<uint64_t> tokens{0};
  std::atomic<int32_t> failed{0};
  Clock::time_point last_done;
  const auto start = Clock::now();
  for (const auto& r : trace) {
    engine::GenerationRequest req;
    req.task_id = r.task_id;
    req.prompt_token_ids = r.prompt;
    req.params.max_tokens = r.max_tokens;
    req.params.temperature = 0.0f;
    req.params.want_logprob = false;  // as the server, which is asked for none
    req.params.ignore_eos = true;
    req.on_update = [&](const engine::SequenceUpdate& u) {
      tokens.fetch_add(u.new_tokens.size());
      if (!u.finished) return;
      if (u.finish_reason != engine::FinishReason::kLength) failed.fetch_add(1);
      std::lock_guard<std::mutex> lock(mu);
      last_done = Clock::now();
      ++finished;
      cv.notify_all();
    };
    auto id = e.submit(std::move(req));
    if (!id.ok()) {
      spdlog::error("submit: {}", id.status().to_string());
      std::lock_guard<std::mutex> lock(mu);
      ++finished;
      failed.fetch_add(1);
    }
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return finished == trace.size(); });
  return {std::chrono::duration<double>(last_done - start).count(), tokens.load(), failed.load()};
}

int run(cli::EngineFlags& ef, client::TraceOptions& t, const std::vector<std::string>& adapters,
        bool include_base, const std::string& prompt_len, const std::string& output_len,
        int32_t runs, bool json) {
  Status st = client::parse_range(prompt_len, "--prompt-len", &t.prompt_min, &t.prompt_max);
  if (st.ok()) st = client::parse_range(output_len, "--output-len", &t.output_min, &t.output_max);
  if (!st.ok()) {
    spdlog::error("{}", st.message());
    return 2;
  }
  ef.finalize();
  auto e = engine::open_engine(ef.model, ef.backend, ef.engine);
  if (!e.ok()) {
    spdlog::error("{}", e.status().to_string());
    return 1;
  }
  const bool tasks_given = !t.tasks.empty();
  for (const std::string& spec : adapters) {
    const size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0) {
      spdlog::error("--adapter '{}' must be TASK=DIR", spec);
      return 2;
    }
    auto loaded = (*e)->adapters().load(spec.substr(0, eq), spec.substr(eq + 1), false);
    if (!loaded.ok()) {
      spdlog::error("--adapter {}: {}", spec, loaded.status().to_string());
      return 1;
    }
    if (!tasks_given) t.tasks.push_back(spec.substr(0, eq));
  }
  if (!tasks_given) std::sort(t.tasks.begin(), t.tasks.end());
  if (include_base || t.tasks.empty()) t.tasks.push_back("");
  t.rate = 0.0;
  if (t.vocab_size == 0) t.vocab_size = static_cast<int32_t>((*e)->config().vocab_size);
  auto trace = client::make_trace(t);
  if (!trace.ok()) {
    spdlog::error("{}", trace.status().message());
    return 2;
  }
  std::jthread loop([&](std::stop_token stop) { (void)(*e)->run_loop(stop); });
  std::vector<double> rates;
  int32_t failed = 0;
  for (int32_t i = 0; i < runs; ++i) {
    const RunResult r = replay(**e, *trace);
    failed += r.failed;
    rates.push_back(static_cast<double>(r.tokens) / r.seconds);
    spdlog::info("run {}: {} tokens in {:.3f} s: {:.1f} tokens/s", i + 1, r.tokens, r.seconds,
                 rates.back());
  }
  loop.request_stop();
  std::vector<double> sorted = rates;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  if (json) {
    std::cout << nlohmann::json{{"requests", t.requests},
                                {"tasks", t.tasks.size()},
                                {"runs", rates},
                                {"tokens_per_s", median},
                                {"failed", failed}}
                     .dump()
              << "\n";
  } else {
    std::cout << "in-process replay of " << t.requests << " requests over " << t.tasks.size()
              << " tasks, all at once: " << median << " tokens/s (median of " << runs << ", "
              << sorted.front() << " - " << sorted.back() << ")\n";
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"server_bench: a loractl bench trace replayed in-process (no gRPC)"};
  cli::EngineFlags ef;
  cli::add_engine_flags(&app, &ef);
  client::TraceOptions t;
  std::vector<std::string> adapters;
  bool include_base = false;
  bool json = false;
  std::string prompt_len = "16:64";
  std::string output_len = "16:64";
  int32_t runs = 3;
  std::string log_level = "warn";
  app.add_option("--adapter", adapters, "TASK=DIR (repeatable)");
  app.add_option("--tasks", t.tasks, "Task IDs, most popular first (default: the --adapter ones)")
      ->delimiter(',');
  app.add_flag("--include-base", include_base, "Also send requests to the base model");
  app.add_option("--requests", t.requests, "Requests in the trace")->capture_default_str();
  app.add_option("--zipf", t.zipf, "Zipf exponent of task popularity")->capture_default_str();
  app.add_option("--prompt-len", prompt_len, "Prompt lengths MIN:MAX")->capture_default_str();
  app.add_option("--output-len", output_len, "Output lengths MIN:MAX")->capture_default_str();
  app.add_option("--vocab-size", t.vocab_size, "Prompt ids < this (default: the model's)");
  app.add_option("--seed", t.seed, "Seed of the trace")->capture_default_str();
  app.add_option("--runs", runs, "Replays (the median is reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--json", json, "Print JSON");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  cli::set_up_logging(log_level);
  return run(ef, t, adapters, include_base, prompt_len, output_len, runs, json);
}
