// sample_bench: what a request's logit edits (penalties, logit_bias, min_tokens) and min_p add
// to the CPU backend's sampling of one decode step, beside the same step without them. Rows of
// a Llama 3 vocabulary (128,256); each edited row carries `--edits` entries (a repetition
// penalty over a prompt of that many distinct tokens, say). Settings are interleaved, each
// repeat runs every one, and the fastest repeat is kept.
//   sample_bench --rows 32 --edits 2000 --repeats 20
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <random>

#include "bench/bench_util.h"
#include "kernels/cpu/cpu_backend.h"

namespace loraserve::bench {
namespace {

struct Setting {
  const char* name;
  float temperature;
  float top_p;
  bool edits;
  float min_p;
  int32_t top_k = 0;
};

int run(int argc, char** argv) {
  CLI::App app{"sample_bench: the CPU sampler with and without logit edits"};
  int64_t vocab = 128256;
  int32_t rows = 32, edits = 2000, repeats = 20, threads = 0;
  app.add_option("--vocab", vocab, "Vocabulary size")->check(CLI::Range(2, 1 << 22));
  app.add_option("--rows", rows, "Rows sampled a step")->check(CLI::Range(1, 1024));
  app.add_option("--edits", edits, "Edits per edited row")->check(CLI::Range(1, 1 << 22));
  app.add_option("--repeats", repeats, "Repeats (the fastest is kept)")->check(CLI::Range(1, 1000));
  app.add_option("--threads", threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 1024));
  CLI11_PARSE(app, argc, argv);

  auto backend = kernels::create_cpu_backend(threads);
  auto buf = backend->allocate(static_cast<size_t>(rows * vocab) * sizeof(float));
  if (!buf.ok()) return 1;
  const kernels::Tensor logits = buf->view(DType::kF32, rows, vocab);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> host(static_cast<size_t>(rows * vocab));
  for (float& v : host) v = normal(rng);
  if (!backend->copy_to_device(logits, host.data(), DType::kF32, host.size()).ok()) return 1;
  std::vector<kernels::LogitEdit> list;
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  for (int32_t i = 0; i < edits; ++i) list.push_back({token(rng), 0.0f, 1.2f, 0.3f});

  const Setting settings[] = {{"greedy", 0.0f, 1.0f, false, 0.0f},
                              {"greedy + edits", 0.0f, 1.0f, true, 0.0f},
                              {"temperature 0.8", 0.8f, 1.0f, false, 0.0f},
                              {"temperature 0.8, top_p 0.95", 0.8f, 0.95f, false, 0.0f},
                              {"... + edits", 0.8f, 0.95f, true, 0.0f},
                              {"... + edits + min_p 0.05", 0.8f, 0.95f, true, 0.05f},
                              {"temperature 0.8, top_k 50", 0.8f, 1.0f, false, 0.0f, 50}};
  std::vector<double> best(std::size(settings), 1e30);
  std::vector<kernels::SampleResult> results;
  for (int r = 0; r < repeats; ++r) {
    show_run_progress(r, repeats);
    for (size_t s = 0; s < std::size(settings); ++s) {
      std::vector<kernels::SampleParams> params(static_cast<size_t>(rows));
      for (auto& p : params) {
        p.temperature = settings[s].temperature;
        p.top_p = settings[s].top_p;
        p.top_k = settings[s].top_k;
        p.uniform = 0.5f;
        p.want_logprob = false;
        if (settings[s].edits) p.edits = list;
        p.min_p = settings[s].min_p;
      }
      const auto t0 = std::chrono::steady_clock::now();
      if (!backend->sample(logits, params, &results).ok()) return 1;
      best[s] = std::min(best[s], seconds_since(t0));
    }
  }
  std::printf("sample_bench: %s; %d rows of %ld logits, %d edits per edited row, fastest of %d\n",
              backend->describe().c_str(), rows, static_cast<long>(vocab), edits, repeats);
  std::printf("%-32s %12s %12s\n", "setting", "ms / step", "vs. plain");
  for (size_t s = 0; s < std::size(settings); ++s) {
    // Against the same draw unfiltered (top_k) or with top_p alone (the edited rows).
    const double plain = best[settings[s].temperature == 0        ? 0
                              : (s == 2 || settings[s].top_k > 0) ? 2
                                                                  : 3];
    std::printf("%-32s %12.3f %12.2f\n", settings[s].name, best[s] * 1e3, best[s] / plain);
  }
  return 0;
}

}  // namespace
}  // namespace loraserve::bench

int main(int argc, char** argv) { return loraserve::bench::run(argc, argv); }
