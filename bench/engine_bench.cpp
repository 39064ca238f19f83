// engine_bench: prefill and decode throughput of the CPU engine on Llama-shaped models (synthetic
// presets with random weights, or a checkpoint folder), for one or more weight dtypes, and the
// fraction of the machine's read bandwidth that decode at batch 1 reaches. With several dtypes,
// one engine per dtype is built and their runs are interleaved (every repeat runs each dtype at
// each batch size once), so ratios between them are measured side by side.
//   engine_bench --preset small --batches 1,8,32
//   engine_bench --preset 8b-layers --weights-dtype f32,bf16,int8 --repeats 3
//   engine_bench --model /path/to/llama-3-8b --weights-dtype bf16 --batches 1,32
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <random>

#include "bench/bench_util.h"
#include "engine/engine.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_matmul.h"

namespace loraserve::bench {
namespace {

struct RunResult {
  double prefill_tokens_per_s = 0;
  double decode_step_s = 0;  // median
  double decode_tokens_per_s = 0;
  double probe_bytes_per_s = 0;  // batch 1: the read-bandwidth probe between prefill and decode
};

// Submits `batch` prompts of `prompt_len` random tokens, runs the prefill step(s), then
// `decode_steps` decode steps; returns throughput figures. With `probe`, the read bandwidth is
// measured between the prefill and the decode steps (the prefill's figure is not disturbed, and
// the decode steps' median is not moved by the first step after it).
Result<RunResult> run_batch(engine::Engine& eng, int batch, int prompt_len, int decode_steps,
                            uint64_t seed, bool probe) {
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
  if (probe) out.probe_bytes_per_s = measure_read_bandwidth(1ull << 30, 3);
  std::vector<double> steps;
  while (eng.has_work()) {
    t0 = std::chrono::steady_clock::now();
    LS_RETURN_IF_ERROR(eng.step());
    steps.push_back(seconds_since(t0));
  }
  if (finished != batch)
    return internal_error("bench: {} of {} sequences finished", finished, batch);
  out.decode_step_s = summarize(steps).median;
  out.decode_tokens_per_s = batch / out.decode_step_s;
  return out;
}

// The step's GEMMs alone, as the CPU backend runs them (fused QKV, O, fused gate/up, down per
// layer; lm_head), on weights of the model's shapes and dtype made once: time(rows) is the median
// milliseconds of `repeats` passes at `rows` rows (up to max_rows), what a decode step at that
// batch could take if everything else were free.
class GemmOnly {
 public:
  GemmOnly(const formats::ModelConfig& c, DType dtype, int64_t max_rows) {
    const struct {
      int64_t out, in, count;
    } shapes[] = {{c.q_dim() + 2 * c.kv_dim(), c.hidden_size, c.num_layers},
                  {c.hidden_size, c.q_dim(), c.num_layers},
                  {2 * c.intermediate_size, c.hidden_size, c.num_layers},
                  {c.hidden_size, c.intermediate_size, c.num_layers},
                  {c.vocab_size, c.hidden_size, 1}};
    // One weight per GEMM, as in the model, so every pass reads them all from memory.
    int64_t widest = 0;
    std::vector<float> values;
    for (const auto& sh : shapes) {
      values.assign(static_cast<size_t>(sh.out * sh.in), 0.01f);
      for (int64_t i = 0; i < sh.count; ++i) {
        storage_.emplace_back(kernels::weight_storage_bytes(dtype, sh.out, sh.in) + 64);
        char* p = storage_.back().data();
        void* base = p + (64 - reinterpret_cast<uintptr_t>(p) % 64) % 64;
        weights_.push_back(kernels::weight_view(base, dtype, sh.out, sh.in));
        if (!kernels::cpu::convert_weights(weights_.back(), values.data(), DType::kF32).ok())
          std::abort();
      }
      widest = std::max({widest, sh.out, sh.in});
    }
    x_.assign(static_cast<size_t>(max_rows * widest), 0.02f);
    y_.resize(static_cast<size_t>(max_rows * widest));
  }

  double time_ms(int64_t rows, int repeats) {
    std::vector<double> times;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (const kernels::Tensor& w : weights_) {
        if (!kernels::cpu::matmul(rows, x_.data(), w.cols, w, 0.0f, y_.data(), w.rows).ok())
          std::abort();
      }
      times.push_back(seconds_since(t0));
    }
    return summarize(times).median * 1e3;
  }

 private:
  std::vector<std::vector<char>> storage_;
  std::vector<kernels::Tensor> weights_;
  std::vector<float> x_, y_;
};

// Peak and current resident memory of this process (VmHWM, VmRSS), in bytes.
std::pair<double, double> resident_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  double hwm = 0, rss = 0;
  while (in >> key) {
    double kb = 0;
    if (key == "VmHWM:" && in >> kb) hwm = kb * 1024;
    if (key == "VmRSS:" && in >> kb) rss = kb * 1024;
  }
  return {hwm, rss};
}

struct Subject {
  std::string name;  // the --weights-dtype value
  std::unique_ptr<engine::Engine> engine;
  double step_bytes = 0;                       // weight bytes a decode step reads
  std::map<int, std::vector<RunResult>> runs;  // batch → one result per repeat
};

int run(int argc, char** argv) {
  CLI::App app{"engine_bench: CPU engine throughput on synthetic models or a checkpoint"};
  std::string preset = "small";
  std::string model_dir;
  std::vector<std::string> dtypes = {"f32"};
  std::vector<int> batches = {1, 8, 32};
  int prompt_len = 128;
  int decode_steps = 16;
  int threads = 0;
  int repeats = 1;
  int max_batched_tokens = 0;
  bool gemms = true;
  app.add_option("--preset", preset, "small, 8b-layers or tiny")->capture_default_str();
  app.add_option("--model", model_dir, "A Hugging Face model folder instead of a preset");
  app.add_option("--weights-dtype", dtypes, "One or more of f32, bf16, int8, auto (interleaved)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--batches", batches, "Batch sizes")->delimiter(',')->capture_default_str();
  app.add_option("--prompt-len", prompt_len)->capture_default_str();
  app.add_option("--decode-steps", decode_steps)->capture_default_str();
  app.add_option("--threads", threads, "0: all cores")->capture_default_str();
  app.add_option("--repeats", repeats, "Interleaved runs of each dtype and batch")
      ->capture_default_str();
  app.add_option("--max-batched-tokens", max_batched_tokens,
                 "Rows per step (0: all prompts of the largest batch at once, up to 4096)")
      ->capture_default_str();
  app.add_flag("!--no-gemms", gemms, "Skip the GEMM-only timing (always skipped with --model)");
  CLI11_PARSE(app, argc, argv);

  std::unique_ptr<formats::TensorStore> store;
  Result<formats::ModelConfig> config = formats::ModelConfig{};
  if (model_dir.empty()) {
    config = preset_config(preset);
  } else {
    config = formats::load_model_config(model_dir);
    preset = model_dir;
  }
  if (!config.ok()) {
    spdlog::error("{}", config.status().to_string());
    return 2;
  }
  const auto& c = *config;
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  engine::EngineOptions eo;
  eo.max_batch_size = max_batch;
  eo.max_batched_tokens = max_batched_tokens > 0
                              ? std::max(max_batched_tokens, max_batch)
                              : std::max(max_batch, std::min(max_batch * prompt_len, 4096));
  eo.max_lora_rank = 0;
  // Room for the largest batch's contexts, no more (an 8B model leaves little memory).
  eo.kv_cache_bytes =
      static_cast<int64_t>(engine::KvCache::bytes_per_block(c, eo.block_size, DType::kF32)) *
      (max_batch * ((prompt_len + decode_steps + 2) / eo.block_size + 2) + 16);

  std::vector<Subject> subjects;
  for (const std::string& name : dtypes) {
    auto parsed = kernels::parse_weights_dtype_flag(name);
    if (!parsed.ok()) {
      spdlog::error("{}", parsed.status().to_string());
      return 2;
    }
    kernels::BackendOptions bo;
    bo.device = "cpu";
    bo.cpu_threads = threads;
    bo.cpu_weight_dtype = *parsed;
    auto backend = kernels::create_backend(bo);
    if (!backend.ok()) {
      spdlog::error("{}", backend.status().to_string());
      return 1;
    }
    std::unique_ptr<engine::WeightSource> source;
    if (model_dir.empty()) {
      source = engine::random_source(42);
    } else {
      auto opened = formats::TensorStore::open_folder(model_dir, "model.safetensors");
      if (!opened.ok()) {
        spdlog::error("{}", opened.status().to_string());
        return 1;
      }
      source = engine::checkpoint_source(std::move(*opened));
    }
    const auto before = resident_bytes();
    auto eng = engine::Engine::create(c, *source, std::move(*backend), eo);
    if (!eng.ok()) {
      spdlog::error("{}", eng.status().to_string());
      return 1;
    }
    source.reset();
    const auto after = resident_bytes();
    Subject s;
    s.name = name;
    s.engine = std::move(*eng);
    const engine::Model& m = s.engine->model();
    s.step_bytes =
        decode_step_weight_bytes(static_cast<double>(m.weight_bytes()), c, m.weight_dtype());
    fmt::print(
        "{}: weights {} {:.1f} MiB; resident after loading {:.2f} GiB, peak while loading "
        "{:.2f} GiB (before: {:.2f} GiB)\n",
        name, dtype_name(m.weight_dtype()), static_cast<double>(m.weight_bytes()) / (1 << 20),
        after.second / (1 << 30), after.first / (1 << 30), before.second / (1 << 30));
    subjects.push_back(std::move(s));
  }

  fmt::print("{}: {} layers, dim {}, ffn {}, vocab {}; {}\n", preset, c.num_layers, c.hidden_size,
             c.intermediate_size, c.vocab_size, subjects.front().engine->backend().describe());
  // The read-bandwidth probe runs beside what it is compared with: in each batch-1 run, just
  // before its decode steps, so a host whose bandwidth drifts (other tenants, clocks) moves both
  // sides of each ratio.
  std::vector<double> probes;
  for (int r = 0; r < repeats; ++r) {
    for (int b : batches) {
      for (Subject& s : subjects) {
        auto result = run_batch(*s.engine, b, prompt_len, decode_steps,
                                7 + static_cast<uint64_t>(b) + 1000 * r, /*probe=*/b == 1);
        if (!result.ok()) {
          spdlog::error("{}", result.status().to_string());
          return 1;
        }
        if (b == 1) probes.push_back(result->probe_bytes_per_s);
        s.runs[b].push_back(*result);
      }
    }
    show_run_progress(r + 1, repeats);
  }
  auto median = [](const std::vector<RunResult>& runs, double RunResult::*field) {
    std::vector<double> v;
    for (const RunResult& r : runs) v.push_back(r.*field);
    return summarize(v).median;
  };
  if (!probes.empty()) {
    const Summary bw = summarize(probes);
    fmt::print(
        "read bandwidth: {:.2f} GB/s (median of {} probes, one in each batch-1 run before its "
        "decode steps: {:.2f}-{:.2f}; each the best of 3 sums over 1 GiB on all threads)\n",
        bw.median / 1e9, probes.size(), bw.min / 1e9, bw.max / 1e9);
  }
  fmt::print("medians of {} interleaved run(s); prompts of {} tokens, {} decode steps\n", repeats,
             prompt_len, decode_steps);
  fmt::print("{:>6} {:>6} {:>16} {:>16} {:>12} {:>12} {:>10}\n", "dtype", "batch", "prefill tok/s",
             "decode tok/s", "step ms", "vs batch 1", fmt::format("vs {}", subjects.front().name));
  for (Subject& s : subjects) {
    const double base = median(s.runs[batches.front()], &RunResult::decode_tokens_per_s);
    for (int b : batches) {
      const double prefill = median(s.runs[b], &RunResult::prefill_tokens_per_s);
      const double decode = median(s.runs[b], &RunResult::decode_tokens_per_s);
      const double step = median(s.runs[b], &RunResult::decode_step_s);
      const double first = median(subjects.front().runs[b], &RunResult::decode_tokens_per_s);
      fmt::print("{:>6} {:>6} {:>16.1f} {:>16.2f} {:>12.2f} {:>11.2f}x {:>9.2f}x\n", s.name, b,
                 prefill, decode, step * 1e3, decode / base, decode / first);
      if (b == 1) {
        // Each run against the probe run just before it; the median of those ratios.
        std::vector<double> shares;
        for (const RunResult& run : s.runs[b])
          shares.push_back(s.step_bytes / run.decode_step_s / run.probe_bytes_per_s);
        const Summary share = summarize(shares);
        fmt::print(
            "{:>13} batch-1 decode reads {:.1f} MiB per step: {:.2f} GB/s = {:.1f}% of the "
            "bandwidth probed beside it (median of {} runs: {:.1f}-{:.1f}%)\n",
            "", s.step_bytes / (1 << 20), s.step_bytes / step / 1e9, 100.0 * share.median,
            shares.size(), 100.0 * share.min, 100.0 * share.max);
      }
    }
    if (subjects.size() > 1) {
      const double p0 =
          median(subjects.front().runs[batches.back()], &RunResult::prefill_tokens_per_s);
      fmt::print("{:>13} prefill (batch {}) vs {}: {:.2f}x\n", "", batches.back(),
                 subjects.front().name,
                 median(s.runs[batches.back()], &RunResult::prefill_tokens_per_s) / p0);
    }
  }
  const auto peak = resident_bytes();
  fmt::print("peak resident memory of the process: {:.2f} GiB\n", peak.first / (1 << 30));
  // With --model the GEMM-only weights would be a second copy of a real model's.
  if (!gemms || !model_dir.empty()) return 0;
  // How far batching can go here: the GEMMs alone at each batch, on the backend's threads.
  spdlog::info("timing the step's GEMMs alone at each batch size");
  fmt::print(
      "GEMMs alone (the step's shapes, same threads, median of 5); 'ceiling' is the rows/s of a\n"
      "step that did nothing but its GEMMs, over the batch-{} decode tokens/s above:\n",
      batches.front());
  fmt::print("{:>6} {:>6} {:>14} {:>16} {:>12}\n", "dtype", "batch", "GEMMs ms", "rows/s",
             "ceiling");
  for (Subject& s : subjects) {
    const double base = median(s.runs[batches.front()], &RunResult::decode_tokens_per_s);
    GemmOnly gemm_set(c, s.engine->model().weight_dtype(), max_batch);
    for (int b : batches) {
      const double ms = gemm_set.time_ms(b, 5);
      fmt::print("{:>6} {:>6} {:>14.2f} {:>16.1f} {:>11.2f}x\n", s.name, b, ms, b / ms * 1e3,
                 b / ms * 1e3 / base);
    }
  }
  return 0;
}

}  // namespace
}  // namespace loraserve::bench

int main(int argc, char** argv) { return loraserve::bench::run(argc, argv); }
