// gpu_bench: the CUDA backend on a synthetic model of Llama-3-8B shape (32 layers, dim 4096,
// 32 / 8 heads, ffn 14336, vocab 128256), BF16 weights drawn at random on the device.
//   1. read bandwidth: best device-wide sum over a 4 GiB array;
//   2. decode at batch 1: step time against weight bytes / that bandwidth (target <= 1.3x);
//   3. 64 sequences on 4 distinct rank-16 adapters (all seven projections) against the same
//      batch without adapters: throughput ratio (target >= 0.90);
//   4. 64 sequences on 64 distinct adapters: throughput ratio against the bytes bound
//      1 / (1 + adapter bytes read per step / base bytes read per step) (target >= 0.9 x bound);
//   5. one rank-16 adapter uploaded while batch-64 decode steps run: upload time (target <= 5 ms)
//      and the steps that ran meanwhile;
//   6. decode tokens/s without adapters at batch 1, 8, 32, 64 and 128.
// A step is what the engine does per step: the forward pass over StepMeta, then sampling
// (greedy) with its copy back to the host. Prints the figures and writes them as JSON; it never
// asserts on time (tools/gpu-check reads the JSON).
//   gpu_bench --out gpu_bench.json [--layers 32] [--context 512] [--steps 12] [--rounds 3]
#include <cuda_profiler_api.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "adapters/lora_adapter.h"
#include "bench/bench_util.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "kernels/cuda/cuda_backend.h"

namespace loraserve::bench {
namespace {

using formats::ModelConfig;
using formats::Projection;
using kernels::Backend;
using kernels::Tensor;

constexpr int32_t kBlockSize = 16;
constexpr int32_t kBatch = 64;      // the adapter scenarios' batch
constexpr int32_t kMaxBatch = 128;  // the largest batch of the decode sweep
constexpr int32_t kSweep[] = {1, 8, 32, 64, 128};
constexpr int32_t kRank = 16;

ModelConfig llama3_8b(int64_t layers) {
  ModelConfig c;
  c.architecture = formats::Architecture::kLlama;
  c.architecture_name = "LlamaForCausalLM";
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = layers;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 128256;
  c.max_position_embeddings = c.max_context = 8192;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.torch_dtype = "bfloat16";
  c.eos_token_ids = {128001};
  return c;
}

// Weights drawn on the device into a scratch buffer, which the model copies device to device.
class DeviceRandomSource final : public engine::WeightSource {
 public:
  explicit DeviceRandomSource(Backend* backend) : backend_(backend) {}
  Status read(const std::string& name, const std::vector<int64_t>& shape,
              const std::function<Status(const void*, DType)>& sink) override {
    const int64_t n = std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
    if (scratch_.bytes() < static_cast<size_t>(n) * 2) {
      scratch_.reset();
      LS_ASSIGN_OR_RETURN(scratch_, backend_->allocate(static_cast<size_t>(n) * 2));
    }
    const bool norm = name.find("norm") != std::string::npos;
    const float scale = norm ? 0.1f : 1.0f / std::sqrt(static_cast<float>(shape.back()));
    const float center = norm ? 1.0f : 0.0f;
    LS_RETURN_IF_ERROR(kernels::cuda_fill_uniform(*backend_, scratch_.view(DType::kBF16, 1, n),
                                                  ++seed_, center - scale, center + scale));
    return sink(scratch_.data(), DType::kBF16);
  }
  bool has(const std::string&) const override { return true; }

 private:
  Backend* backend_;
  kernels::DeviceBuffer scratch_;
  uint64_t seed_ = 0;
};

// One adapter's A and B for every projection of every layer, in one device buffer.
struct DeviceAdapter {
  kernels::DeviceBuffer buffer;
  std::vector<kernels::LoraSlice> slices;  // [lora_table]
};

size_t adapter_bytes(const ModelConfig& c) {
  size_t elems = 0;
  for (Projection p : formats::kAllProjections) {
    const auto [out, in] = formats::projection_shape(c, p);
    elems += static_cast<size_t>(kRank * (in + out));
  }
  return elems * 2 * static_cast<size_t>(c.num_layers);
}

Result<DeviceAdapter> make_adapter(Backend& b, const ModelConfig& c, uint64_t seed) {
  DeviceAdapter a;
  LS_ASSIGN_OR_RETURN(a.buffer, b.allocate(adapter_bytes(c)));
  a.slices.resize(static_cast<size_t>(adapters::num_lora_tables(c)));
  size_t off = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (Projection p : formats::kAllProjections) {
      const auto [out, in] = formats::projection_shape(c, p);
      kernels::LoraSlice& s = a.slices[static_cast<size_t>(adapters::lora_table(l, p))];
      s.a = static_cast<char*>(a.buffer.data()) + off;
      off += static_cast<size_t>(kRank * in) * 2;
      s.b = static_cast<char*>(a.buffer.data()) + off;
      off += static_cast<size_t>(out * kRank) * 2;
      s.rank = kRank;
      s.scale = 2.0f;
    }
  }
  LS_RETURN_IF_ERROR(kernels::cuda_fill_uniform(
      b, a.buffer.view(DType::kBF16, 1, static_cast<int64_t>(off / 2)), seed, -0.01f, 0.01f));
  return a;
}

// Decode steps of `batch` sequences, sequence i on adapters[i * adapters.size() / batch] (rows
// of one adapter contiguous), or on none.
class DecodeLoop {
 public:
  DecodeLoop(engine::Model& model, engine::KvCache& cache, int32_t batch, int32_t context,
             std::vector<const DeviceAdapter*> adapters)
      : model_(model),
        cache_(cache),
        batch_(batch),
        context_(context),
        adapters_(std::move(adapters)) {
    const int32_t blocks = (context + 1024 + kBlockSize - 1) / kBlockSize;
    meta_.max_blocks_per_seq = blocks;
    for (int32_t s = 0; s < batch; ++s) {
      for (int32_t b = 0; b < blocks; ++b) meta_.block_tables.push_back(s * blocks + b);
    }
    if (!adapters_.empty()) {
      const int32_t per = batch / static_cast<int32_t>(adapters_.size());
      for (size_t a = 0; a < adapters_.size(); ++a)
        meta_.lora_segments.push_back(
            {static_cast<int32_t>(a) * per, static_cast<int32_t>(a + 1) * per});
      const int32_t tables = adapters::num_lora_tables(model.config());
      meta_.num_lora_tables = tables;
      for (int32_t t = 0; t < tables; ++t) {
        for (const DeviceAdapter* a : adapters_)
          meta_.lora_slices.push_back(a->slices[static_cast<size_t>(t)]);
      }
    }
    params_.resize(static_cast<size_t>(batch));
  }

  // One step at position context + step; returns its wall time in seconds.
  Result<double> step(int32_t step) {
    const auto t0 = std::chrono::steady_clock::now();
    meta_.token_ids.assign(static_cast<size_t>(batch_), 0);
    meta_.positions.clear();
    meta_.slot_mapping.clear();
    meta_.row_seq.clear();
    meta_.logits_rows.clear();
    for (int32_t s = 0; s < batch_; ++s) {
      const int32_t pos = context_ + step;
      meta_.token_ids[static_cast<size_t>(s)] = last_[static_cast<size_t>(s)];
      meta_.positions.push_back(pos);
      meta_.slot_mapping.push_back((s * meta_.max_blocks_per_seq + pos / kBlockSize) * kBlockSize +
                                   pos % kBlockSize);
      meta_.row_seq.push_back(s);
      meta_.logits_rows.push_back(s);
    }
    LS_ASSIGN_OR_RETURN(Tensor logits, model_.forward(meta_, cache_));
    LS_RETURN_IF_ERROR(model_.backend()->sample(logits, params_, &results_));
    for (int32_t s = 0; s < batch_; ++s)
      last_[static_cast<size_t>(s)] = results_[static_cast<size_t>(s)].token_id;
    return seconds_since(t0);
  }

 private:
  engine::Model& model_;
  engine::KvCache& cache_;
  int32_t batch_, context_;
  std::vector<const DeviceAdapter*> adapters_;
  kernels::StepMeta meta_;
  std::vector<kernels::SampleParams> params_;
  std::vector<kernels::SampleResult> results_;
  std::vector<int32_t> last_ = std::vector<int32_t>(kMaxBatch, 1);
};

// Median step time of `steps` steps after `warmup` (graphs are captured on the second step).
Result<double> median_step(DecodeLoop& loop, int warmup, int steps) {
  std::vector<double> t;
  for (int i = 0; i < warmup + steps; ++i) {
    LS_ASSIGN_OR_RETURN(double s, loop.step(i));
    if (i >= warmup) t.push_back(s);
  }
  return summarize(t).median;
}

nlohmann::json target(double value, double bound, bool at_most) {
  return {{"value", value}, {"target", bound}, {"met", at_most ? value <= bound : value >= bound}};
}

// --profile: `steps` steps of one scenario between cudaProfilerStart and Stop, after 3 warm-up
// steps, and nothing else: what `ncu --profile-from-start off` (tools/gpu-profile) times.
Status profile_one(DecodeLoop& loop, int steps) {
  for (int i = 0; i < 3; ++i) LS_RETURN_IF_ERROR(loop.step(i).status());
  if (cudaProfilerStart() != cudaSuccess) return internal_error("cudaProfilerStart failed");
  for (int i = 3; i < 3 + steps; ++i) LS_RETURN_IF_ERROR(loop.step(i).status());
  if (cudaProfilerStop() != cudaSuccess) return internal_error("cudaProfilerStop failed");
  return ok_status();
}

Status run(const std::string& out_path, int64_t layers, int32_t context, int steps, int rounds,
           const std::string& profile) {
  kernels::BackendOptions bo;
  bo.device = "cuda";
  LS_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, kernels::create_backend(bo));
  Backend& b = *backend;
  nlohmann::json j;
  j["device"] = b.describe();
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  j["date"] = date;

  LS_ASSIGN_OR_RETURN(const double bandwidth, kernels::cuda_read_bandwidth(b, size_t{4} << 30, 10));
  j["read_bandwidth_gb_s"] = bandwidth / 1e9;
  spdlog::info("read bandwidth (sum over 4 GiB): {:.0f} GB/s", bandwidth / 1e9);

  const ModelConfig c = llama3_8b(layers);
  DeviceRandomSource source(&b);
  engine::ForwardOptions fo;
  fo.max_rows = kMaxBatch;
  fo.max_logits_rows = kMaxBatch;
  fo.max_lora_rank = kRank;
  LS_ASSIGN_OR_RETURN(auto model, engine::Model::load(c, source, &b, fo));
  const int32_t blocks_per_seq = (context + 1024 + kBlockSize - 1) / kBlockSize;
  LS_ASSIGN_OR_RETURN(auto cache,
                      engine::KvCache::create(c, &b, kMaxBatch * blocks_per_seq, kBlockSize));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LS_RETURN_IF_ERROR(kernels::cuda_fill_uniform(b, cache->k(l), 1000 + l, -1.0f, 1.0f));
    LS_RETURN_IF_ERROR(kernels::cuda_fill_uniform(b, cache->v(l), 2000 + l, -1.0f, 1.0f));
  }
  const double weight_bytes = static_cast<double>(model->weight_bytes());
  j["model"] = {{"layers", c.num_layers},
                {"hidden", c.hidden_size},
                {"vocab", c.vocab_size},
                {"weight_bytes", weight_bytes},
                {"context", context}};

  if (!profile.empty()) {
    std::vector<DeviceAdapter> pool;
    std::vector<const DeviceAdapter*> adapters;
    const int n = profile == "lora4" ? 4 : profile == "lora64" ? kBatch : 0;
    for (int a = 0; a < n; ++a) {
      LS_ASSIGN_OR_RETURN(DeviceAdapter ad, make_adapter(b, c, 5000 + static_cast<uint64_t>(a)));
      pool.push_back(std::move(ad));
    }
    for (const DeviceAdapter& ad : pool) adapters.push_back(&ad);
    const int32_t batch = profile == "batch1" ? 1 : kBatch;
    DecodeLoop loop(*model, *cache, batch, context, adapters);
    spdlog::info("profiling {}: batch {}, {} adapters, {} steps", profile, batch, n, steps);
    return profile_one(loop, steps);
  }

  // 2. Batch 1.
  DecodeLoop single(*model, *cache, 1, context, {});
  std::vector<double> b1;
  for (int r = 0; r < rounds; ++r) {
    LS_ASSIGN_OR_RETURN(double t, median_step(single, 3, steps));
    b1.push_back(t);
  }
  const double b1_step = summarize(b1).median;
  // What one step reads: every weight but the embedding table (one row of it), and the KV cache.
  const double layer_bytes = decode_step_weight_bytes(weight_bytes, c, DType::kBF16);
  auto kv_read = [&](int32_t batch) {
    return static_cast<double>(batch) * (context + steps) * 2.0 * static_cast<double>(c.kv_dim()) *
           2.0 * static_cast<double>(c.num_layers);
  };
  const double b1_bound = (layer_bytes + kv_read(1)) / bandwidth;
  j["decode_batch1"] = {{"step_ms", b1_step * 1e3},
                        {"bytes_read_per_step", layer_bytes + kv_read(1)},
                        {"bytes_bound_ms", b1_bound * 1e3},
                        {"all_weight_bytes_bound_ms", weight_bytes / bandwidth * 1e3},
                        {"ratio_to_bound", target(b1_step / b1_bound, 1.3, true)}};
  spdlog::info(
      "decode batch 1: {:.3f} ms/step; bytes read / bandwidth {:.3f} ms; ratio {:.3f} (target "
      "<= 1.3)",
      b1_step * 1e3, b1_bound * 1e3, b1_step / b1_bound);

  // 3 and 4. Batch 64 without adapters, on 4, and on 64 distinct adapters, interleaved by round.
  std::vector<DeviceAdapter> pool;
  for (int a = 0; a < kBatch; ++a) {
    LS_ASSIGN_OR_RETURN(DeviceAdapter ad, make_adapter(b, c, 5000 + static_cast<uint64_t>(a)));
    pool.push_back(std::move(ad));
  }
  std::vector<const DeviceAdapter*> four, all;
  for (int a = 0; a < kBatch; ++a) all.push_back(&pool[static_cast<size_t>(a)]);
  four.assign(all.begin(), all.begin() + 4);
  DecodeLoop base(*model, *cache, kBatch, context, {});
  DecodeLoop lora4(*model, *cache, kBatch, context, four);
  DecodeLoop lora64(*model, *cache, kBatch, context, all);
  std::vector<double> t_base, t4, t64;
  for (int r = 0; r < rounds; ++r) {
    LS_ASSIGN_OR_RETURN(double x, median_step(base, 3, steps));
    LS_ASSIGN_OR_RETURN(double y, median_step(lora4, 3, steps));
    LS_ASSIGN_OR_RETURN(double z, median_step(lora64, 3, steps));
    t_base.push_back(x);
    t4.push_back(y);
    t64.push_back(z);
  }
  const double base_step = summarize(t_base).median, step4 = summarize(t4).median,
               step64 = summarize(t64).median;
  // Bytes one batch-64 step reads: the weights and the KV cache; each adapter's A and B once.
  const double base_bytes = layer_bytes + kv_read(kBatch);
  const double one_adapter = static_cast<double>(adapter_bytes(c));
  const double bound64 = 1.0 / (1.0 + kBatch * one_adapter / base_bytes);
  j["batch64"] = {{"base_step_ms", base_step * 1e3},
                  {"lora4_step_ms", step4 * 1e3},
                  {"lora64_step_ms", step64 * 1e3},
                  {"adapter_bytes", one_adapter},
                  {"base_bytes_read_per_step", base_bytes},
                  {"lora4_throughput_ratio", target(base_step / step4, 0.90, false)},
                  {"lora64_bytes_bound", bound64},
                  {"lora64_ratio_to_bound", target(base_step / step64 / bound64, 0.90, false)}};
  spdlog::info(
      "batch 64: {:.3f} ms/step without adapters, {:.3f} on 4 adapters (ratio {:.3f}, target "
      ">= 0.90), {:.3f} on 64 adapters (ratio {:.3f}; bytes bound {:.3f}; {:.3f} of it, "
      "target >= 0.90)",
      base_step * 1e3, step4 * 1e3, base_step / step4, step64 * 1e3, base_step / step64, bound64,
      base_step / step64 / bound64);

  // 5. One adapter uploaded from pinned memory while batch-64 steps run.
  LS_ASSIGN_OR_RETURN(kernels::DeviceBuffer host, b.allocate_host(adapter_bytes(c)));
  std::mt19937 rng(3);
  auto* h = static_cast<uint16_t*>(host.data());
  for (size_t i = 0; i < host.bytes() / 2; ++i)
    h[i] = f32_to_bf16(static_cast<float>(rng() % 200) * 1e-4f);
  LS_ASSIGN_OR_RETURN(kernels::DeviceBuffer dst, b.allocate(adapter_bytes(c)));
  const int64_t elems = static_cast<int64_t>(host.bytes() / 2);
  LS_ASSIGN_OR_RETURN(const double quiet, median_step(base, 3, steps));
  LS_ASSIGN_OR_RETURN(const uint64_t ticket,
                      b.copy_to_device_async(dst.view(DType::kBF16, 1, elems), host.data(),
                                             DType::kBF16, static_cast<size_t>(elems)));
  int overlapped = 0;
  std::vector<double> during;
  while (overlapped < 1000) {
    LS_ASSIGN_OR_RETURN(const bool done, b.upload_done(ticket));
    if (done) break;
    LS_ASSIGN_OR_RETURN(double t, base.step(overlapped));
    during.push_back(t);
    ++overlapped;
  }
  LS_ASSIGN_OR_RETURN(const double upload_ms, kernels::cuda_upload_milliseconds(b, ticket));
  j["upload"] = {{"adapter_bytes", one_adapter},
                 {"upload_ms", target(upload_ms, 5.0, true)},
                 {"steps_while_uploading", overlapped},
                 {"step_ms_while_uploading", during.empty() ? 0.0 : summarize(during).max * 1e3},
                 {"step_ms_quiet", quiet * 1e3}};
  spdlog::info(
      "upload of one rank-{} adapter ({:.1f} MiB): {:.3f} ms (target <= 5); {} decode "
      "steps ran meanwhile ({:.3f} ms at most, {:.3f} quiet)",
      kRank, one_adapter / (1 << 20), upload_ms, overlapped,
      during.empty() ? 0.0 : summarize(during).max * 1e3, quiet * 1e3);

  // 6. The decode sweep, interleaved by round.
  std::vector<DecodeLoop> sweep;
  for (int32_t batch : kSweep)
    sweep.emplace_back(*model, *cache, batch, context, std::vector<const DeviceAdapter*>{});
  std::vector<std::vector<double>> sweep_t(sweep.size());
  for (int r = 0; r < rounds; ++r) {
    for (size_t i = 0; i < sweep.size(); ++i) {
      LS_ASSIGN_OR_RETURN(double t, median_step(sweep[i], 3, steps));
      sweep_t[i].push_back(t);
    }
  }
  nlohmann::json sweep_json = nlohmann::json::array();
  for (size_t i = 0; i < sweep.size(); ++i) {
    const double step = summarize(sweep_t[i]).median;
    const double tokens_s = kSweep[i] / step;
    sweep_json.push_back({{"batch", kSweep[i]}, {"step_ms", step * 1e3}, {"tokens_s", tokens_s}});
    spdlog::info("decode batch {}: {:.3f} ms/step, {:.0f} tokens/s", kSweep[i], step * 1e3,
                 tokens_s);
  }
  j["decode_sweep"] = sweep_json;

  LS_ASSIGN_OR_RETURN(const kernels::CudaGraphStats g, kernels::cuda_graph_stats(b));
  j["graphs"] = {{"captured", g.captured},
                 {"replayed", g.replayed},
                 {"eager_steps", g.eager_steps},
                 {"capture_failures", g.capture_failures}};
  std::ofstream(out_path) << j.dump(2) << "\n";
  spdlog::info("wrote {}", out_path);
  return ok_status();
}

}  // namespace
}  // namespace loraserve::bench

int main(int argc, char** argv) {
  CLI::App app{"gpu_bench: the CUDA backend on a synthetic Llama-3-8B"};
  std::string out = "gpu_bench.json";
  int64_t layers = 32;
  int32_t context = 512;
  int steps = 12, rounds = 3;
  std::string profile;
  app.add_option("--out", out, "JSON results")->capture_default_str();
  app.add_option("--layers", layers, "Decoder layers (32: Llama-3-8B)")->capture_default_str();
  app.add_option("--context", context, "Tokens in each sequence's KV cache")->capture_default_str();
  app.add_option("--steps", steps, "Timed steps per scenario and round")->capture_default_str();
  app.add_option("--rounds", rounds, "Rounds (scenarios interleaved)")->capture_default_str();
  app.add_option("--profile", profile,
                 "Run only --steps steps of one scenario (batch1, base64, lora4, lora64) between "
                 "cudaProfilerStart and Stop, for ncu (tools/gpu-profile)")
      ->check(CLI::IsMember({"batch1", "base64", "lora4", "lora64"}));
  CLI11_PARSE(app, argc, argv);
  const std::string why = loraserve::kernels::cuda_device_count() > 0
                              ? ""
                              : loraserve::kernels::cuda_unavailable_reason();
  if (!why.empty()) {
    spdlog::error("gpu_bench: skipped: no GPU ({})", why);
    return 2;
  }
  const loraserve::Status st = loraserve::bench::run(out, layers, context, steps, rounds, profile);
  if (!st.ok()) {
    spdlog::error("gpu_bench: {}", st.to_string());
    return 1;
  }
  return 0;
}
