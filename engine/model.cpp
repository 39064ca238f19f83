#include "engine/model.h"

#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <numbers>

#include "adapters/lora_adapter.h"
#include "engine/kv_cache.h"

namespace loraserve::engine {
namespace {

using formats::ModelConfig;
using formats::Projection;
using kernels::Tensor;

class CheckpointWeightSource final : public WeightSource {
 public:
  explicit CheckpointWeightSource(std::unique_ptr<formats::TensorStore> store)
      : store_(std::move(store)) {}
  Status read(const std::string& name, const std::vector<int64_t>& shape,
              const std::function<Status(const void*, DType)>& sink) override {
    LS_ASSIGN_OR_RETURN(const formats::TensorInfo* t, store_->get(name, shape));
    const Status status = sink(t->data, *t->dtype);
    release_pages(t->data, t->nbytes);
    return status;
  }
  bool has(const std::string& name) const override { return store_->find(name) != nullptr; }
  std::optional<DType> stored_dtype(const std::string& name) const override {
    const formats::TensorInfo* t = store_->find(name);
    return t == nullptr ? std::nullopt : t->dtype;
  }

 private:
  // Drops the mapping's pages that lie wholly inside [data, data + bytes) from this process
  // (they stay in the page cache): each tensor is read once, and without this the checkpoint's
  // pages would add its whole size to the resident memory while loading.
  static void release_pages(const void* data, size_t bytes) {
    const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const auto begin = reinterpret_cast<uintptr_t>(data);
    const uintptr_t first = (begin + page - 1) / page * page;
    const uintptr_t last = (begin + bytes) / page * page;
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }

  std::unique_ptr<formats::TensorStore> store_;
};

class RandomWeightSource final : public WeightSource {
 public:
  explicit RandomWeightSource(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  Status read(const std::string& name, const std::vector<int64_t>& shape,
              const std::function<Status(const void*, DType)>& sink) override {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    buf_.resize(static_cast<size_t>(n));
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const float scale = is_norm   ? 0.1f
                        : is_bias ? 0.02f
                                  : 1.0f / std::sqrt(static_cast<float>(shape.back()));
    for (auto& v : buf_) v = (is_norm ? 1.0f : 0.0f) + scale * (2.0f * next() - 1.0f);
    return sink(buf_.data(), DType::kF32);
  }
  bool has(const std::string&) const override { return true; }

 private:
  float next() {  // xorshift64*: fast and plenty for weights nobody trains
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return static_cast<float>((state_ * 0x2545F4914F6CDD1Dull) >> 40) * (1.0f / 16777216.0f);
  }
  uint64_t state_;
  std::vector<float> buf_;
};

}  // namespace

std::unique_ptr<WeightSource> checkpoint_source(std::unique_ptr<formats::TensorStore> store) {
  return std::make_unique<CheckpointWeightSource>(std::move(store));
}

std::unique_ptr<WeightSource> random_source(uint64_t seed) {
  return std::make_unique<RandomWeightSource>(seed);
}

std::vector<float> rope_inverse_frequencies(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // As transformers computes it: base ** (arange(0, dim, 2).float() / dim) in float32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(c.rope_theta), exponent);
  }
  const auto& rs = c.rope_scaling;
  if (rs.type == formats::RopeScaling::Type::kLinear) {
    for (auto& f : inv) f = static_cast<float>(f / rs.factor);
  } else if (rs.type == formats::RopeScaling::Type::kLlama3) {
    const double old_ctx = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_ctx / rs.low_freq_factor;
    const double high_wavelen = old_ctx / rs.high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / rs.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / rs.factor + smooth * f);
      }
    }
  }
  return inv;
}

Result<std::unique_ptr<Model>> Model::load(const ModelConfig& config, WeightSource& source,
                                           kernels::Backend* backend,
                                           const ForwardOptions& options) {
  if (options.max_rows <= 0 || options.max_logits_rows <= 0) {
    return invalid_argument_error("model: max_rows and max_logits_rows must be positive");
  }
  std::unique_ptr<Model> model(new Model(config, backend, options));
  LS_RETURN_IF_ERROR(model->load_weights(source));
  LS_RETURN_IF_ERROR(model->allocate_scratch());
  return model;
}

DType checkpoint_dtype(const formats::ModelConfig& config, const WeightSource& source, bool warn) {
  const std::optional<DType> claimed = parse_dtype(config.torch_dtype);
  const std::optional<DType> stored = source.stored_dtype("model.layers.0.self_attn.q_proj.weight");
  if (warn && stored && claimed && *stored != *claimed) {
    spdlog::warn(
        "config.json gives torch_dtype '{}', but the checkpoint's weights are {}: going "
        "by the weights",
        config.torch_dtype, dtype_name(*stored));
  }
  return stored.value_or(claimed.value_or(DType::kBF16));
}

Status Model::load_weights(WeightSource& source) {
  const auto& c = config_;
  const auto t0 = std::chrono::steady_clock::now();
  const DType checkpoint = checkpoint_dtype(c, source, /*warn=*/true);
  weight_dtype_ = backend_->weight_dtype(checkpoint);
  spdlog::info("weights in {}: {}", dtype_name(weight_dtype_),
               backend_->weight_dtype_reason(checkpoint));
  // Matrices in the weight dtype; norm weights and biases (vectors) in the activation dtype.
  const DType vector_dt = backend_->activation_dtype();
  // Allocates a (rows, cols) weight tensor and fills it from one or more checkpoint tensors
  // stacked by rows (fused q/k/v and gate/up), each converted as it is read.
  auto load_tensor = [&](const std::vector<std::string>& names, const std::vector<int64_t>& rows,
                         int64_t cols, bool vector) -> Result<Tensor> {
    const DType dt = vector ? vector_dt : weight_dtype_;
    int64_t total_rows = 0;
    for (int64_t r : rows) total_rows += r;
    const size_t bytes = kernels::weight_storage_bytes(dt, total_rows, cols);
    LS_ASSIGN_OR_RETURN(kernels::DeviceBuffer buf, backend_->allocate(bytes));
    const Tensor whole = kernels::weight_view(buf.data(), dt, total_rows, cols);
    const Tensor t = vector ? buf.view(dt, 1, total_rows * cols) : whole;
    int64_t row = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      const std::vector<int64_t> shape =
          vector ? std::vector<int64_t>{rows[i] * cols} : std::vector<int64_t>{rows[i], cols};
      Tensor part = whole.row_slice(row, rows[i]);
      LS_RETURN_IF_ERROR(source.read(names[i], shape, [&](const void* data, DType src) {
        return backend_->copy_to_device(part, data, src, static_cast<size_t>(rows[i] * cols));
      }));
      row += rows[i];
    }
    weight_bytes_ += bytes;
    buffers_.push_back(std::move(buf));
    return t;
  };
  auto vec = [&](const std::string& name, int64_t n) { return load_tensor({name}, {n}, 1, true); };

  LS_ASSIGN_OR_RETURN(
      embed_, load_tensor({"model.embed_tokens.weight"}, {c.vocab_size}, c.hidden_size, false));
  layers_.resize(static_cast<size_t>(c.num_layers));
  const int64_t log_every = std::max<int64_t>(1, c.num_layers / 8);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    Layer& L = layers_[static_cast<size_t>(l)];
    const std::string p = fmt::format("model.layers.{}.", l);
    const std::string a = p + "self_attn.";
    const std::string m = p + "mlp.";
    LS_ASSIGN_OR_RETURN(L.input_norm, vec(p + "input_layernorm.weight", c.hidden_size));
    LS_ASSIGN_OR_RETURN(L.post_norm, vec(p + "post_attention_layernorm.weight", c.hidden_size));
    LS_ASSIGN_OR_RETURN(L.qkv,
                        load_tensor({a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"},
                                    {c.q_dim(), c.kv_dim(), c.kv_dim()}, c.hidden_size, false));
    if (c.qkv_bias) {
      LS_ASSIGN_OR_RETURN(L.qkv_bias,
                          load_tensor({a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"},
                                      {c.q_dim(), c.kv_dim(), c.kv_dim()}, 1, true));
    }
    LS_ASSIGN_OR_RETURN(L.o, load_tensor({a + "o_proj.weight"}, {c.hidden_size}, c.q_dim(), false));
    if (c.o_bias) {
      LS_ASSIGN_OR_RETURN(L.o_bias, vec(a + "o_proj.bias", c.hidden_size));
    }
    if (c.qk_norm) {
      LS_ASSIGN_OR_RETURN(L.q_norm, vec(a + "q_norm.weight", c.head_dim));
      LS_ASSIGN_OR_RETURN(L.k_norm, vec(a + "k_norm.weight", c.head_dim));
    }
    LS_ASSIGN_OR_RETURN(
        L.gate_up, load_tensor({m + "gate_proj.weight", m + "up_proj.weight"},
                               {c.intermediate_size, c.intermediate_size}, c.hidden_size, false));
    LS_ASSIGN_OR_RETURN(
        L.down, load_tensor({m + "down_proj.weight"}, {c.hidden_size}, c.intermediate_size, false));
    if (c.mlp_bias) {
      LS_ASSIGN_OR_RETURN(L.gate_up_bias,
                          load_tensor({m + "gate_proj.bias", m + "up_proj.bias"},
                                      {c.intermediate_size, c.intermediate_size}, 1, true));
      LS_ASSIGN_OR_RETURN(L.down_bias, vec(m + "down_proj.bias", c.hidden_size));
    }
    if ((l + 1) % log_every == 0 || l + 1 == c.num_layers) {
      spdlog::info("loading weights: layer {}/{} ({:.1f} MiB so far)", l + 1, c.num_layers,
                   static_cast<double>(weight_bytes_) / (1 << 20));
    }
  }
  LS_ASSIGN_OR_RETURN(final_norm_, vec("model.norm.weight", c.hidden_size));
  if (c.tie_word_embeddings) {
    lm_head_ = embed_;
  } else {
    if (!source.has("lm_head.weight")) {
      return invalid_argument_error(
          "missing tensor 'lm_head.weight' (config.json has tie_word_embeddings false)");
    }
    LS_ASSIGN_OR_RETURN(lm_head_,
                        load_tensor({"lm_head.weight"}, {c.vocab_size}, c.hidden_size, false));
  }
  const std::vector<float> inv = rope_inverse_frequencies(c);
  LS_ASSIGN_OR_RETURN(kernels::DeviceBuffer freq_buf, backend_->allocate(inv.size() * 4));
  inv_freq_ = freq_buf.view(DType::kF32, 1, static_cast<int64_t>(inv.size()));
  // RoPE frequencies stay f32 on every backend.
  LS_RETURN_IF_ERROR(backend_->copy_to_device(inv_freq_, inv.data(), DType::kF32, inv.size()));
  buffers_.push_back(std::move(freq_buf));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("loaded {} weights: {:.1f} MiB ({}) on {} in {:.2f} s",
               formats::architecture_name(c.architecture),
               static_cast<double>(weight_bytes_) / (1 << 20), dtype_name(weight_dtype_),
               backend_->describe(), secs);
  return ok_status();
}

std::vector<Model::ScratchTensor> Model::scratch_tensors(const ModelConfig& c,
                                                         const ForwardOptions& o, DType dt) {
  const int64_t n = o.max_rows;
  const int64_t m = o.max_logits_rows;
  std::vector<ScratchTensor> out = {
      {&Model::hidden_, n, c.hidden_size, dt},
      {&Model::normed_, n, c.hidden_size, dt},
      {&Model::qkv_out_, n, c.q_dim() + 2 * c.kv_dim(), dt},
      {&Model::attn_out_, n, c.q_dim(), dt},
      {&Model::proj_out_, n, c.hidden_size, dt},
      {&Model::gate_up_out_, n, 2 * c.intermediate_size, dt},
      {&Model::act_out_, n, c.intermediate_size, dt},
      {&Model::final_rows_, m, c.hidden_size, dt},
      // Logits are F32 on every backend: 16-bit logits would round near-ties into exact ties.
      {&Model::logits_, m, c.vocab_size, DType::kF32},
  };
  if (o.max_lora_rank > 0) {
    // The widest shrink is the largest LoRA group's (q, k and v together).
    out.push_back({&Model::lora_tmp_, n,
                   formats::kMaxLoraGroupSize * static_cast<int64_t>(o.max_lora_rank), dt});
  }
  return out;
}

double Model::activation_bytes(const ModelConfig& config, const ForwardOptions& options,
                               DType activation_dtype) {
  double bytes = 0.0;
  for (const ScratchTensor& t : scratch_tensors(config, options, activation_dtype))
    bytes += static_cast<double>(t.rows * t.cols) * static_cast<double>(dtype_size(t.dtype));
  return bytes;
}

Status Model::allocate_scratch() {
  for (const ScratchTensor& t : scratch_tensors(config_, options_, backend_->activation_dtype())) {
    LS_ASSIGN_OR_RETURN(
        kernels::DeviceBuffer buf,
        backend_->allocate(static_cast<size_t>(t.rows * t.cols) * dtype_size(t.dtype)));
    this->*t.member = buf.view(t.dtype, t.rows, t.cols);
    buffers_.push_back(std::move(buf));
  }
  return ok_status();
}

Result<Tensor> Model::forward(const kernels::StepMeta& meta, KvCache& cache) {
  const int64_t n = meta.num_rows();
  const int64_t m = static_cast<int64_t>(meta.logits_rows.size());
  if (n == 0 || n > options_.max_rows || m > options_.max_logits_rows) {
    return internal_error(
        "model: step of {} rows and {} logits rows exceeds the scratch ({} and {})", n, m,
        options_.max_rows, options_.max_logits_rows);
  }
  const bool lora = !meta.lora_segments.empty();
  if (lora && options_.max_lora_rank == 0)
    return internal_error("model: LoRA rows but no LoRA scratch");
  kernels::Backend& b = *backend_;
  LS_RETURN_IF_ERROR(b.begin_step(meta));
  LS_RETURN_IF_ERROR(b.embedding(embed_, hidden_.row_slice(0, n)));
  for (int64_t l = 0; l < config_.num_layers; ++l)
    LS_RETURN_IF_ERROR(layer_forward(l, meta, cache, n, lora));
  const float eps = static_cast<float>(config_.rms_norm_eps);
  LS_RETURN_IF_ERROR(b.add_rms_norm(hidden_.row_slice(0, n), proj_out_.row_slice(0, n), final_norm_,
                                    eps, normed_.row_slice(0, n)));
  if (m == 0) return logits_.row_slice(0, 0);
  LS_RETURN_IF_ERROR(b.gather_logits_rows(normed_.row_slice(0, n), final_rows_.row_slice(0, m)));
  LS_RETURN_IF_ERROR(
      b.matmul(final_rows_.row_slice(0, m), lm_head_, logits_.row_slice(0, m), false));
  return logits_.row_slice(0, m);
}

Status Model::layer_forward(int64_t l, const kernels::StepMeta&, KvCache& cache, int64_t n,
                            bool lora) {
  const auto& c = config_;
  const Layer& L = layers_[static_cast<size_t>(l)];
  kernels::Backend& b = *backend_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const Tensor h = hidden_.row_slice(0, n), x = normed_.row_slice(0, n),
               qkv = qkv_out_.row_slice(0, n);
  const Tensor attn = attn_out_.row_slice(0, n), proj = proj_out_.row_slice(0, n);
  const Tensor gu = gate_up_out_.row_slice(0, n), act = act_out_.row_slice(0, n);
  const Tensor tmp = lora ? lora_tmp_.row_slice(0, n) : Tensor{};
  const int64_t qd = c.q_dim(), kvd = c.kv_dim(), f = c.intermediate_size;

  if (l == 0) {
    LS_RETURN_IF_ERROR(b.rms_norm(h, L.input_norm, eps, x));
  } else {
    LS_RETURN_IF_ERROR(b.add_rms_norm(h, proj, L.input_norm, eps, x));  // + previous MLP output
  }
  // Attention block.
  LS_RETURN_IF_ERROR(b.matmul(x, L.qkv, qkv, false));
  if (L.qkv_bias.data) LS_RETURN_IF_ERROR(b.add_bias(qkv, L.qkv_bias));
  const Tensor q = qkv.col_slice(0, qd), k = qkv.col_slice(qd, kvd),
               v = qkv.col_slice(qd + kvd, kvd);
  if (lora) LS_RETURN_IF_ERROR(lora_forward(l, formats::kLoraQkv, x, {q, k, v}, tmp));
  if (c.qk_norm) {
    LS_RETURN_IF_ERROR(b.head_rms_norm(q, static_cast<int32_t>(c.head_dim), L.q_norm, eps));
    LS_RETURN_IF_ERROR(b.head_rms_norm(k, static_cast<int32_t>(c.head_dim), L.k_norm, eps));
  }
  LS_RETURN_IF_ERROR(b.rope(q, static_cast<int32_t>(c.head_dim), inv_freq_));
  LS_RETURN_IF_ERROR(b.rope(k, static_cast<int32_t>(c.head_dim), inv_freq_));
  LS_RETURN_IF_ERROR(b.write_kv(k, v, cache.k(l), cache.v(l)));
  kernels::AttentionShape shape;
  shape.num_heads = static_cast<int32_t>(c.num_heads);
  shape.num_kv_heads = static_cast<int32_t>(c.num_kv_heads);
  shape.head_dim = static_cast<int32_t>(c.head_dim);
  shape.block_size = cache.block_size();
  shape.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  LS_RETURN_IF_ERROR(b.attention(q, cache.k(l), cache.v(l), shape, attn));
  LS_RETURN_IF_ERROR(b.matmul(attn, L.o, proj, false));
  if (L.o_bias.data) LS_RETURN_IF_ERROR(b.add_bias(proj, L.o_bias));
  if (lora) LS_RETURN_IF_ERROR(lora_forward(l, formats::kLoraO, attn, {proj}, tmp));
  // MLP block.
  LS_RETURN_IF_ERROR(b.add_rms_norm(h, proj, L.post_norm, eps, x));
  LS_RETURN_IF_ERROR(b.matmul(x, L.gate_up, gu, false));
  if (L.gate_up_bias.data) LS_RETURN_IF_ERROR(b.add_bias(gu, L.gate_up_bias));
  if (lora) {
    LS_RETURN_IF_ERROR(
        lora_forward(l, formats::kLoraGateUp, x, {gu.col_slice(0, f), gu.col_slice(f, f)}, tmp));
  }
  LS_RETURN_IF_ERROR(b.silu_mul(gu, act));
  LS_RETURN_IF_ERROR(b.matmul(act, L.down, proj, false));
  if (L.down_bias.data) LS_RETURN_IF_ERROR(b.add_bias(proj, L.down_bias));
  if (lora) LS_RETURN_IF_ERROR(lora_forward(l, formats::kLoraDown, act, {proj}, tmp));
  return ok_status();
}

Status Model::lora_forward(int64_t l, formats::LoraGroup group, const Tensor& input,
                           std::initializer_list<Tensor> outs, const Tensor& tmp) {
  int32_t tables[formats::kMaxLoraGroupSize];
  for (int32_t k = 0; k < group.size; ++k) tables[k] = adapters::lora_table(l, group.at(k));
  const std::span<const int32_t> group_tables(tables, static_cast<size_t>(group.size));
  LS_RETURN_IF_ERROR(backend_->lora_shrink(input, group_tables, tmp));
  return backend_->lora_expand(tmp, group_tables,
                               std::span<const Tensor>(outs.begin(), outs.size()));
}

}  // namespace loraserve::engine
