// lora_bench: what serving many LoRA adapters in one batch costs on the CPU engine.
// Every ratio comes from runs interleaved A/B/A/B in one process (median, min–max); the figure of
// each run is its fastest decode step, which sheds most of a shared machine's noise.
//   lora_bench --preset 8b-layers      (the issue's figures; --naive-preset small)
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <random>

#include "adapters/lora_adapter.h"
#include "bench/bench_util.h"
#include "engine/engine.h"
#include "formats/safetensors.h"
#include "kernels/cpu/cpu_backend.h"

namespace loraserve::bench {
namespace {

using formats::ModelConfig;
using formats::Projection;

struct Options {
  std::string preset = "8b-layers";
  std::string naive_preset = "small";
  int batch = 32;
  int rank = 16;
  int prompt_len = 16;
  int decode_steps = 8;
  int repeats = 5;
  int threads = 0;
  std::string weights_dtype = "f32";  // of the base model
  std::string lora_dtype = "auto";    // of the adapters (auto: f32, as they are built in f32)
};

std::vector<adapters::LoraModuleWeights> random_adapter(const ModelConfig& c, int rank,
                                                        uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.02f, 0.02f);
  std::vector<adapters::LoraModuleWeights> mods;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (Projection p : formats::kAllProjections) {
      const auto [out, in] = formats::projection_shape(c, p);
      adapters::LoraModuleWeights w;
      w.layer = l;
      w.projection = p;
      w.rank = rank;
      w.scale = 2.0f;
      w.a.resize(static_cast<size_t>(rank * in));
      w.b.resize(static_cast<size_t>(out * rank));
      for (auto& v : w.a) v = u(rng);
      for (auto& v : w.b) v = u(rng);
      mods.push_back(std::move(w));
    }
  }
  return mods;
}

class Bench {
 public:
  Bench(const Options& o, ModelConfig config, std::unique_ptr<engine::Engine> eng)
      : o_(o), config_(std::move(config)), eng_(std::move(eng)) {}

  Status add_adapter(const std::string& task, int rank, uint32_t seed) {
    LS_ASSIGN_OR_RETURN(
        auto a, adapters::LoraAdapter::from_weights(random_adapter(config_, rank, seed), config_,
                                                    &eng_->backend(), 64));
    adapter_bytes_[task] = static_cast<double>(a->bytes());
    return eng_->adapters().add(task, std::move(a), true).status();
  }
  double adapter_bytes(const std::string& task) const { return adapter_bytes_.at(task); }
  // Milliseconds per step spent in the LoRA ops (lora_shrink + lora_expand) during the last
  // decode_tokens_per_s run: median over its steps.
  double last_lora_ms() const { return last_lora_ms_; }

  // Decode throughput of one batch whose i-th row uses tasks[i], from the run's fastest step:
  // on a shared machine the median step carries other tenants' noise, several times the few
  // percent measured here; the fastest step of each run sheds most of it.
  Result<double> decode_tokens_per_s(const std::vector<std::string>& tasks) {
    std::mt19937 rng(11);
    std::uniform_int_distribution<int32_t> tok(3, static_cast<int32_t>(config_.vocab_size) - 1);
    for (const auto& t : tasks) {
      engine::GenerationRequest r;
      r.task_id = t;
      r.prompt_token_ids.resize(static_cast<size_t>(o_.prompt_len));
      for (auto& x : r.prompt_token_ids) x = tok(rng);
      r.params.temperature = 0;
      r.params.want_logprob = false;  // as a server request that asks for no logprobs
      r.params.ignore_eos = true;
      r.params.max_tokens = o_.decode_steps + 2;
      LS_RETURN_IF_ERROR(eng_->submit(std::move(r)).status());
    }
    const uint64_t target = eng_->stats().tokens_generated + tasks.size();
    while (eng_->stats().tokens_generated < target) LS_RETURN_IF_ERROR(eng_->step());
    LS_RETURN_IF_ERROR(eng_->step());  // first decode step: allocation and cache warm-up
    std::vector<double> steps, lora;
    while (eng_->has_work()) {
      LS_ASSIGN_OR_RETURN(const double lora0, kernels::cpu_lora_seconds(eng_->backend()));
      const auto t0 = std::chrono::steady_clock::now();
      LS_RETURN_IF_ERROR(eng_->step());
      const double s = seconds_since(t0);
      LS_ASSIGN_OR_RETURN(const double lora1, kernels::cpu_lora_seconds(eng_->backend()));
      if (eng_->stats().running == static_cast<int32_t>(tasks.size())) {
        steps.push_back(s);
        lora.push_back(lora1 - lora0);
      }
    }
    last_lora_ms_ = summarize(lora).median * 1e3;
    const Summary st = summarize(steps);
    return static_cast<double>(tasks.size()) / st.min;
  }

  // Runs a and b alternately `repeats` times each; returns the per-pair ratios b / a and both
  // series.
  struct Pair {
    Summary a, b, ratio;
  };
  Result<Pair> interleave(const std::function<Result<double>()>& a,
                          const std::function<Result<double>()>& b) {
    std::vector<double> va, vb, ratio;
    for (int i = 0; i < o_.repeats; ++i) {
      LS_ASSIGN_OR_RETURN(double x, a());
      LS_ASSIGN_OR_RETURN(double y, b());
      va.push_back(x);
      vb.push_back(y);
      ratio.push_back(y / x);
      show_run_progress(i, o_.repeats);
    }
    show_run_progress(o_.repeats, o_.repeats);
    return Pair{summarize(va), summarize(vb), summarize(ratio)};
  }

  engine::Engine& engine() { return *eng_; }
  const ModelConfig& config() const { return config_; }

 private:
  Options o_;
  ModelConfig config_;
  std::unique_ptr<engine::Engine> eng_;
  std::map<std::string, double> adapter_bytes_;
  double last_lora_ms_ = 0;
};

Result<std::unique_ptr<Bench>> make_bench(const Options& o, const std::string& preset, int batch) {
  LS_ASSIGN_OR_RETURN(ModelConfig c, preset_config(preset));
  engine::EngineOptions eo;
  eo.max_batch_size = batch;
  eo.max_batched_tokens = std::max(batch * o.prompt_len, batch);
  eo.max_lora_rank = 64;
  eo.max_device_adapters = 2 * batch + 8;
  eo.max_host_adapters = 4 * batch + 16;
  eo.kv_cache_bytes = static_cast<int64_t>(engine::KvCache::bytes_per_block(c, 16, DType::kF32)) *
                      (batch * ((o.prompt_len + o.decode_steps + 2) / 16 + 2) + 16);
  kernels::BackendOptions bo;
  bo.device = "cpu";
  bo.cpu_threads = o.threads;
  LS_ASSIGN_OR_RETURN(bo.cpu_weight_dtype, kernels::parse_weights_dtype_flag(o.weights_dtype));
  LS_ASSIGN_OR_RETURN(bo.cpu_lora_dtype, kernels::parse_lora_dtype_flag(o.lora_dtype));
  LS_ASSIGN_OR_RETURN(auto backend, kernels::create_backend(bo));
  auto source = engine::random_source(42);
  LS_ASSIGN_OR_RETURN(auto eng, engine::Engine::create(c, *source, std::move(backend), eo));
  return std::make_unique<Bench>(o, c, std::move(eng));
}

std::string fmt_summary(const Summary& s, int precision = 3) {
  return fmt::format("{:.{}f} ({:.{}f}–{:.{}f})", s.median, precision, s.min, precision, s.max,
                     precision);
}

Status run(const Options& o) {
  LS_ASSIGN_OR_RETURN(auto bench, make_bench(o, o.preset, o.batch));
  const ModelConfig& c = bench->config();
  const engine::Model& model = bench->engine().model();
  const double base_bytes =
      decode_step_weight_bytes(static_cast<double>(model.weight_bytes()), c, model.weight_dtype());
  fmt::print(
      "preset {} ({} layers, dim {}, ffn {}); {} weights; --lora-dtype {}; batch {}; rank {} on "
      "all "
      "seven projections; {} "
      "decode steps per run; {} interleaved runs each; {}\n",
      o.preset, c.num_layers, c.hidden_size, c.intermediate_size, dtype_name(model.weight_dtype()),
      o.lora_dtype, o.batch, o.rank, o.decode_steps, o.repeats,
      bench->engine().backend().describe());
  std::vector<std::string> none(static_cast<size_t>(o.batch), "");
  auto baseline = [&] { return bench->decode_tokens_per_s(none); };

  // 1. Four distinct adapters, batch/4 rows each.
  spdlog::info("1/5: 4 adapters vs none");
  std::vector<std::string> four;
  for (int i = 0; i < 4; ++i)
    LS_RETURN_IF_ERROR(bench->add_adapter(fmt::format("four{}", i), o.rank, 100 + i));
  for (int i = 0; i < o.batch; ++i) four.push_back(fmt::format("four{}", i % 4));
  std::vector<double> four_lora_ms;
  LS_ASSIGN_OR_RETURN(auto p4, bench->interleave(baseline, [&]() -> Result<double> {
    LS_ASSIGN_OR_RETURN(double t, bench->decode_tokens_per_s(four));
    four_lora_ms.push_back(bench->last_lora_ms());
    return t;
  }));
  fmt::print("4 distinct adapters ({} rows each) vs no adapter: tokens/s {} vs {}; ratio {}\n",
             o.batch / 4, fmt_summary(p4.b, 1), fmt_summary(p4.a, 1), fmt_summary(p4.ratio));
  const double four_lora = summarize(four_lora_ms).median;
  const double base_step_ms = o.batch / p4.a.median * 1e3;
  fmt::print(
      "  the LoRA ops, timed inside the steps: {:.2f} ms of a {:.1f} ms step, so the ratio they "
      "leave is "
      "{:.3f}\n",
      four_lora, base_step_ms, base_step_ms / (base_step_ms + four_lora));

  // 2. One adapter per row.
  spdlog::info("2/5: {} adapters vs none", o.batch);
  std::vector<std::string> distinct;
  for (int i = 0; i < o.batch; ++i) {
    const std::string t = fmt::format("distinct{}", i);
    LS_RETURN_IF_ERROR(bench->add_adapter(t, o.rank, 200 + i));
    distinct.push_back(t);
  }
  std::vector<double> distinct_lora_ms;
  LS_ASSIGN_OR_RETURN(auto pd, bench->interleave(baseline, [&]() -> Result<double> {
    LS_ASSIGN_OR_RETURN(double t, bench->decode_tokens_per_s(distinct));
    distinct_lora_ms.push_back(bench->last_lora_ms());
    return t;
  }));
  const double adapter_step_bytes = o.batch * bench->adapter_bytes("distinct0");
  const double bound = 1.0 / (1.0 + adapter_step_bytes / base_bytes);
  fmt::print(
      "{} distinct adapters vs no adapter: ratio {}; bytes bound 1/(1 + {:.1f} MiB / {:.1f} MiB) = "
      "{:.3f}; "
      "ratio / bound = {:.3f}\n",
      o.batch, fmt_summary(pd.ratio), adapter_step_bytes / (1 << 20), base_bytes / (1 << 20), bound,
      pd.ratio.median / bound);
  const double distinct_lora = summarize(distinct_lora_ms).median;
  fmt::print(
      "  the LoRA ops, timed inside the steps: {:.2f} ms per step ({:.1f} GB/s of A and B)\n",
      distinct_lora, adapter_step_bytes / (distinct_lora * 1e-3) / 1e9);

  // 3. Base-model rows while adapters are loaded vs an engine with none loaded at all.
  // One engine, its adapters unloaded for the "none loaded" runs and loaded back (the same
  // objects) for the others, so both sides read the same weights from the same memory.
  spdlog::info("3/5: base rows with adapters loaded vs none loaded");
  adapters::AdapterRegistry& registry = bench->engine().adapters();
  const std::vector<adapters::AdapterRef> loaded = registry.list();
  auto with_none_loaded = [&]() -> Result<double> {
    for (const auto& a : loaded) LS_RETURN_IF_ERROR(registry.unload(a->task_id));
    return bench->decode_tokens_per_s(none);
  };
  auto with_all_loaded = [&]() -> Result<double> {
    for (const auto& a : loaded)
      LS_RETURN_IF_ERROR(registry.add(a->task_id, a->adapter, false).status());
    return bench->decode_tokens_per_s(none);
  };
  LS_ASSIGN_OR_RETURN(auto pn, bench->interleave(with_none_loaded, with_all_loaded));
  fmt::print("rows with no task, {} adapters loaded vs none loaded: ratio {}\n", loaded.size(),
             fmt_summary(pn.ratio));

  // 4. Ranks 8, 16, 32, 64: each alone on every row, then mixed a quarter each.
  spdlog::info("4/5: mixed ranks");
  const int ranks[] = {8, 16, 32, 64};
  std::vector<std::vector<std::string>> per_rank(4);
  std::vector<std::string> mixed;
  for (int k = 0; k < 4; ++k) {
    for (int i = 0; i < 4; ++i) {
      const std::string t = fmt::format("rank{}_{}", ranks[k], i);
      LS_RETURN_IF_ERROR(bench->add_adapter(t, ranks[k], 300 + 10 * k + i));
    }
    for (int i = 0; i < o.batch; ++i)
      per_rank[static_cast<size_t>(k)].push_back(fmt::format("rank{}_{}", ranks[k], i % 4));
  }
  // As many distinct adapters as each single-rank run (4, batch/4 rows each): one of each rank.
  for (int i = 0; i < o.batch; ++i) mixed.push_back(fmt::format("rank{}_0", ranks[i % 4]));
  // LoRA adds a few percent to a step here, less than the machine's noise between runs, so
  // besides the steps the LoRA ops are timed inside them (the CPU backend's own clock around
  // lora_shrink and lora_expand; median step, median of runs).
  std::vector<double> base_times, times[5], lora_ms[5];
  for (int rep = 0; rep < o.repeats; ++rep) {
    LS_ASSIGN_OR_RETURN(double b, bench->decode_tokens_per_s(none));
    base_times.push_back(o.batch / b);
    for (int k = 0; k < 5; ++k) {
      const auto& tasks = k < 4 ? per_rank[static_cast<size_t>(k)] : mixed;
      LS_ASSIGN_OR_RETURN(double t, bench->decode_tokens_per_s(tasks));
      times[k].push_back(o.batch / t);
      lora_ms[k].push_back(bench->last_lora_ms());
    }
    show_run_progress(rep, o.repeats);
  }
  show_run_progress(o.repeats, o.repeats);
  const double base_ms = summarize(base_times).median * 1e3;
  fmt::print(
      "decode step, {} rows, 4 adapters of one rank (or one of each rank, mixed): no adapter "
      "{:.1f} ms\n",
      o.batch, base_ms);
  double mean_lora = 0;
  for (int k = 0; k < 4; ++k) {
    const double lora = summarize(lora_ms[k]).median;
    mean_lora += lora / 4;
    fmt::print(
        "  every row rank {:>2}: LoRA ops {:6.2f} ms per step ({:5.2f} ms per rank-8 unit); step "
        "{:.1f} ms\n",
        ranks[k], lora, lora / (ranks[k] / 8.0), summarize(times[k]).median * 1e3);
  }
  const double mixed_lora = summarize(lora_ms[4]).median;
  fmt::print(
      "  ranks mixed a quarter each: LoRA ops {:.2f} ms per step; the mean of the four alone is "
      "{:.2f} ms, "
      "rank 64 alone {:.2f} ms; step {:.1f} ms\n",
      mixed_lora, mean_lora, summarize(lora_ms[3]).median, summarize(times[4]).median * 1e3);

  // 5. Loading one rank-16 all-projection adapter from disk: read, validate, place in a slot.
  spdlog::info("5/5: adapter load time");
  const auto dir = std::filesystem::temp_directory_path() / "loraserve_lora_bench_adapter";
  std::filesystem::create_directories(dir);
  {
    std::vector<formats::TensorToWrite> tensors;
    auto mods = random_adapter(c, o.rank, 999);
    for (const auto& m : mods) {
      const std::string name = fmt::format("base_model.model.model.layers.{}.{}.{}", m.layer,
                                           formats::projection_block(m.projection),
                                           formats::projection_name(m.projection));
      const auto [out, in] = formats::projection_shape(c, m.projection);
      tensors.push_back({name + ".lora_A.weight", "F32", {m.rank, in}, m.a.data(), m.a.size() * 4});
      tensors.push_back(
          {name + ".lora_B.weight", "F32", {out, m.rank}, m.b.data(), m.b.size() * 4});
    }
    LS_RETURN_IF_ERROR(
        formats::write_safetensors((dir / "adapter_model.safetensors").string(), tensors));
    std::ofstream(dir / "adapter_config.json") << fmt::format(
        R"({{"peft_type":"LORA","r":{},"lora_alpha":{},"target_modules":["q_proj","k_proj",)"
        R"("v_proj","o_proj","gate_proj","up_proj","down_proj"],"bias":"none"}})",
        o.rank, 2 * o.rank);
  }
  std::vector<double> load_ms;
  adapters::AdapterCache cache(&bench->engine().backend(), c, 1);
  for (int i = 0; i < 10; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    LS_ASSIGN_OR_RETURN(auto ref, bench->engine().adapters().load("loadtest", dir.string(), true));
    auto slot = cache.acquire(ref);
    if (!slot) return internal_error("no slot for the loaded adapter");
    while (!cache.ready(*slot)) {
    }
    load_ms.push_back(seconds_since(t0) * 1e3);
    cache.release(*slot);
  }
  std::filesystem::remove_all(dir);
  fmt::print(
      "loading one rank-{} all-projection adapter (F32 file, {:.1f} MiB held in {}; read, "
      "validate, place): p50 {:.1f} ms (min {:.1f}, max {:.1f}, 10 loads)\n",
      o.rank, bench->adapter_bytes("distinct0") / (1 << 20),
      dtype_name(bench->engine().backend().lora_dtype(DType::kF32)), summarize(load_ms).median,
      summarize(load_ms).min, summarize(load_ms).max);
  return ok_status();
}

// The original LoRA deployment batches only requests of one task: with one request per task,
// that is one request at a time. Mixed: all of them in one batch.
Status run_naive(const Options& o) {
  LS_ASSIGN_OR_RETURN(auto bench, make_bench(o, o.naive_preset, o.batch));
  std::vector<std::string> tasks;
  for (int i = 0; i < o.batch; ++i) {
    tasks.push_back(fmt::format("t{}", i));
    LS_RETURN_IF_ERROR(bench->add_adapter(tasks.back(), o.rank, 500 + i));
  }
  spdlog::info("naive per-task batches vs one mixed batch ({} preset)", o.naive_preset);
  auto naive = [&]() -> Result<double> {
    std::vector<double> per_task;
    for (const auto& t : tasks) {
      LS_ASSIGN_OR_RETURN(double v, bench->decode_tokens_per_s({t}));
      per_task.push_back(1.0 / v);  // seconds per token, one task after another
    }
    double total = 0;
    for (double s : per_task) total += s;
    return static_cast<double>(tasks.size()) / total;
  };
  LS_ASSIGN_OR_RETURN(auto p,
                      bench->interleave(naive, [&] { return bench->decode_tokens_per_s(tasks); }));
  fmt::print(
      "preset {}: {} tasks one request each; per-task batches run one after another {} tokens/s, "
      "one mixed "
      "batch {} tokens/s: mixed / naive = {}\n",
      o.naive_preset, o.batch, fmt_summary(p.a, 1), fmt_summary(p.b, 1), fmt_summary(p.ratio, 2));
  return ok_status();
}

}  // namespace
}  // namespace loraserve::bench

int main(int argc, char** argv) {
  using namespace loraserve::bench;
  CLI::App app{"lora_bench: the cost of mixed-adapter batches on the CPU engine"};
  Options o;
  bool naive_only = false, skip_naive = false;
  app.add_option("--preset", o.preset, "small, 8b-layers or tiny")->capture_default_str();
  app.add_option("--naive-preset", o.naive_preset, "Preset of the per-task batching comparison")
      ->capture_default_str();
  app.add_option("--batch", o.batch, "Sequences per batch (a multiple of 4)")
      ->capture_default_str();
  app.add_option("--rank", o.rank)->capture_default_str();
  app.add_option("--decode-steps", o.decode_steps, "Decode steps timed per run")
      ->capture_default_str();
  app.add_option("--repeats", o.repeats, "Interleaved runs of each side")->capture_default_str();
  app.add_option("--threads", o.threads, "0: all cores")->capture_default_str();
  app.add_option("--weights-dtype", o.weights_dtype, "Base weights: f32, bf16, int8 or auto")
      ->capture_default_str();
  app.add_option("--lora-dtype", o.lora_dtype, "Adapters' A and B: f32, bf16 or auto (f32)")
      ->capture_default_str();
  app.add_flag("--naive-only", naive_only, "Only the per-task batching comparison");
  app.add_flag("--skip-naive", skip_naive, "Skip the per-task batching comparison");
  CLI11_PARSE(app, argc, argv);
  loraserve::Status st = naive_only ? loraserve::ok_status() : run(o);
  if (st.ok() && !skip_naive) st = run_naive(o);
  if (!st.ok()) {
    spdlog::error("{}", st.to_string());
    return 1;
  }
  return 0;
}
