// engine_bench: prefill and decode throughput of the CPU engine on synthetic Llama-shaped models,
// and the fraction of the machine's read bandwidth that decode at batch 1 reaches.
//   engine_bench --preset small --batches 1,8,32
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <random>

#include "bench/bench_util.h"
#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"

namespace loraserve::bench {
namespace {

struct RunResult {
  double prefill_tokens_per_s = 0;
  double decode_step_s = 0;  // median
  double decode_tokens_per_s = 0;
};

// Submits `batch` prompts of `prompt_len` random tokens, runs the prefill step(s), then
// `decode_steps` decode steps; returns throughput figures.
Result<RunResult> run_batch(engine::Engine& eng, int batch, int prompt_len, int decode_steps, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<int32_t> tok(3, static_cast<int32_t>(eng.config().vocab_size) - 1);
  int finished = 0;
  for (int b = 0; b < batch; ++b) {
    engine::GenerationRequest r;
    r.prompt_token_ids.resize(static_cast<size_t>(prompt_len));
    for (auto& t : r.prompt_token_ids) t = tok(rng);
    r.params.temperature = 0;
    r.params.want_logprob = false;  // as a server request that asks for no logprobs
    r.params.ignore_eos = true;
    r.params.max_tokens = decode_steps + 1;
    r.on_update = [&finished](const engine::SequenceUpdate& u) { finished += u.finished; };
    LS_ASSIGN_OR_RETURN(uint64_t id, eng.submit(std::move(r)));
    (void)id;
  }
  RunResult out;
  auto t0 = std::chrono::steady_clock::now();
  // Prefill: steps until every sequence has its first token.
  const uint64_t target = eng.stats().tokens_generated + static_cast<uint64_t>(batch);
  while (eng.stats().tokens_generated < target) LS_RETURN_IF_ERROR(eng.step());
  out.prefill_tokens_per_s = static_cast<double>(batch) * prompt_len / seconds_since(t0);
  std::vector<double> steps;
  while (eng.has_work()) {
    t0 = std::chrono::steady_clock::now();
    LS_RETURN_IF_ERROR(eng.step());
    steps.push_back(seconds_since(t0));
  }
  if (finished != batch) return internal_error("bench: {} of {} sequences finished", finished, batch);
  out.decode_step_s = summarize(steps).median;
  out.decode_tokens_per_s = batch / out.decode_step_s;
  return out;
}

// The step's GEMMs alone, as the CPU backend runs them (fused QKV, O, fused gate/up, down per
// layer; lm_head), on weights of the model's shapes made once: time(rows) is the median
// milliseconds of `repeats` passes at `rows` rows (up to max_rows), what a decode step at that
// batch could take if everything else were free.
class GemmOnly {
 public:
  GemmOnly(const formats::ModelConfig& c, int64_t max_rows)
      : shapes_({{c.q_dim() + 2 * c.kv_dim(), c.hidden_size, c.num_layers},
                 {c.hidden_size, c.q_dim(), c.num_layers},
                 {2 * c.intermediate_size, c.hidden_size, c.num_layers},
                 {c.hidden_size, c.intermediate_size, c.num_layers},
                 {c.vocab_size, c.hidden_size, 1}}) {
    // One weight per GEMM, as in the model, so every pass reads them all from memory.
    int64_t widest = 0;
    for (const Shape& sh : shapes_) {
      for (int64_t i = 0; i < sh.count; ++i)
        weights_.emplace_back(static_cast<size_t>(sh.out * sh.in), 0.01f);
      widest = std::max({widest, sh.out, sh.in});
    }
    x_.assign(static_cast<size_t>(max_rows * widest), 0.02f);
    y_.resize(static_cast<size_t>(max_rows * widest));
  }

  double time_ms(int64_t rows, int repeats) {
    std::vector<double> times;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      size_t w = 0;
      for (const Shape& sh : shapes_) {
        for (int64_t i = 0; i < sh.count; ++i, ++w) {
          kernels::cpu::gemm(rows, sh.out, sh.in, x_.data(), sh.in, weights_[w].data(), sh.in,
                             0.0f, y_.data(), sh.out);
        }
      }
      times.push_back(seconds_since(t0));
    }
    return summarize(times).median * 1e3;
  }

 private:
  struct Shape {
    int64_t out, in, count;
  };
  std::vector<Shape> shapes_;
  std::vector<std::vector<float>> weights_;
  std::vector<float> x_, y_;
};

int run(int argc, char** argv) {
  CLI::App app{"engine_bench: CPU engine throughput on synthetic models"};
  std::string preset = "small";
  std::vector<int> batches = {1, 8, 32};
  int prompt_len = 128;
  int decode_steps = 16;
  int threads = 0;
  app.add_option("--preset", preset, "small, 8b-layers or tiny")->capture_default_str();
  app.add_option("--batches", batches, "Batch sizes")->delimiter(',')->capture_default_str();
  app.add_option("--prompt-len", prompt_len)->capture_default_str();
  app.add_option("--decode-steps", decode_steps)->capture_default_str();
  app.add_option("--threads", threads, "0: all cores")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto config = preset_config(preset);
  if (!config.ok()) {
    spdlog::error("{}", config.status().to_string());
    return 2;
  }
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  engine::EngineOptions eo;
  eo.max_batch_size = max_batch;
  eo.max_batched_tokens = std::max(max_batch, std::min(max_batch * prompt_len, 4096));
  eo.max_lora_rank = 0;
  eo.kv_cache_bytes = 0;
  kernels::BackendOptions bo;
  bo.device = "cpu";
  bo.cpu_threads = threads;
  auto backend = kernels::create_backend(bo);
  if (!backend.ok()) {
    spdlog::error("{}", backend.status().to_string());
    return 1;
  }
  spdlog::info("measuring read bandwidth (1 GiB, best of 5)");
  const double bw = measure_read_bandwidth(1ull << 30, 5);
  auto source = engine::random_source(42);
  auto eng = engine::Engine::create(*config, *source, std::move(*backend), eo);
  if (!eng.ok()) {
    spdlog::error("{}", eng.status().to_string());
    return 1;
  }
  const auto& c = *config;
  const double step_bytes =
      decode_step_weight_bytes(static_cast<double>((*eng)->model().weight_bytes()), c, 4);
  fmt::print("preset {}: {} layers, dim {}, ffn {}, vocab {}; weights {:.1f} MiB (f32); {}\n", preset,
             c.num_layers, c.hidden_size, c.intermediate_size, c.vocab_size,
             static_cast<double>((*eng)->model().weight_bytes()) / (1 << 20), (*eng)->backend().describe());
  fmt::print("read bandwidth: {:.2f} GB/s (sum over 1 GiB, all threads, best of 5)\n", bw / 1e9);
  fmt::print("{:>6} {:>16} {:>16} {:>14} {:>12}\n", "batch", "prefill tok/s", "decode tok/s", "step ms", "vs batch 1");
  double base = 0;
  for (int b : batches) {
    auto r = run_batch(**eng, b, prompt_len, decode_steps, 7 + static_cast<uint64_t>(b));
    if (!r.ok()) {
      spdlog::error("{}", r.status().to_string());
      return 1;
    }
    if (b == batches.front()) base = r->decode_tokens_per_s;
    fmt::print("{:>6} {:>16.1f} {:>16.1f} {:>14.2f} {:>11.2f}x\n", b, r->prefill_tokens_per_s, r->decode_tokens_per_s,
               r->decode_step_s * 1e3, r->decode_tokens_per_s / base);
    if (b == 1) {
      const double achieved = step_bytes / r->decode_step_s;
      fmt::print("       batch-1 decode reads {:.1f} MiB per step: {:.2f} GB/s = {:.1f}% of measured bandwidth\n",
                 step_bytes / (1 << 20), achieved / 1e9, 100.0 * achieved / bw);
    }
  }
  // How far batching can go here: the GEMMs alone at each batch, on the backend's threads.
  spdlog::info("timing the step's GEMMs alone at each batch size");
  fmt::print(
      "GEMMs alone (the step's shapes, same threads, median of 5); 'ceiling' is the rows/s of a\n"
      "step that did nothing but its GEMMs, over the batch-{} decode tokens/s above:\n",
      batches.front());
  fmt::print("{:>6} {:>14} {:>16} {:>12}\n", "batch", "GEMMs ms", "rows/s", "ceiling");
  GemmOnly gemms(c, max_batch);
  for (int b : batches) {
    const double ms = gemms.time_ms(b, 5);
    fmt::print("{:>6} {:>14.2f} {:>16.1f} {:>11.2f}x\n", b, ms, b / ms * 1e3, b / ms * 1e3 / base);
  }
  return 0;
}

}  // namespace
}  // namespace loraserve::bench

int main(int argc, char** argv) { return loraserve::bench::run(argc, argv); }
