// A Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) resident on a Backend: its weights in
// the backend's dtype, and the forward pass of one step over a batch of rows from many sequences.
// q/k/v and gate/up are fused into one GEMM each; each targeted projection then gets its rows'
// LoRA branches through the backend's segmented shrink/expand. Not thread-safe (engine thread).
#pragma once

#include <array>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "kernels/backend.h"

namespace loraserve::engine {

class KvCache;

// Where the weights come from: a checkpoint, or (benchmarks, tests) a generator.
// A source hands each tensor over once, in any float dtype; the model converts it on the way.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // Calls `sink(data, dtype)` with the tensor's elements, or returns why it cannot.
  virtual Status read(const std::string& name, const std::vector<int64_t>& shape,
                      const std::function<Status(const void* data, DType dtype)>& sink) = 0;
  virtual bool has(const std::string& name) const = 0;
  // The dtype `name` is stored in, where the source has one (a checkpoint does).
  virtual std::optional<DType> stored_dtype(const std::string& /*name*/) const {
    return std::nullopt;
  }
};

// The dtype the checkpoint's weight matrices are stored in: that of layer 0's q_proj where the
// source has it (config.json's torch_dtype is only a claim; with `warn`, a disagreement is
// logged), else the claim, else BF16.
DType checkpoint_dtype(const formats::ModelConfig& config, const WeightSource& source,
                       bool warn = false);

// A checkpoint folder's safetensors (one file or shards).
std::unique_ptr<WeightSource> checkpoint_source(std::unique_ptr<formats::TensorStore> store);
// Deterministic random weights (uniform in ±scale/sqrt(in), norms near 1) for benchmarks.
std::unique_ptr<WeightSource> random_source(uint64_t seed);

struct ForwardOptions {
  int32_t max_rows = 0;         // most rows in one step (the scheduler's token budget)
  int32_t max_logits_rows = 0;  // most rows turned into logits in one step
  int32_t max_lora_rank = 0;    // largest rank of one module of one adapter; 0: no LoRA scratch
};

class Model {
 public:
  // Reads and converts every weight; progress is logged. `backend` must outlive the model.
  static Result<std::unique_ptr<Model>> load(const formats::ModelConfig& config,
                                             WeightSource& source, kernels::Backend* backend,
                                             const ForwardOptions& options);

  const formats::ModelConfig& config() const { return config_; }
  kernels::Backend* backend() const { return backend_; }
  // Bytes of weights on the backend (what one decode step reads at least once).
  size_t weight_bytes() const { return weight_bytes_; }
  // The dtype of the weight matrices (the backend's choice for this checkpoint).
  DType weight_dtype() const { return weight_dtype_; }
  const ForwardOptions& options() const { return options_; }
  // Bytes of scratch activations a model of `config` allocates for `options`: what one step
  // needs besides the weights and the KV cache.
  static double activation_bytes(const formats::ModelConfig& config, const ForwardOptions& options,
                                 DType activation_dtype);

  // Runs the step `meta` describes (BeginStep is called here) and returns the logits of
  // meta.logits_rows, (logits_rows, vocab) in F32, valid until the next Forward.
  Result<kernels::Tensor> forward(const kernels::StepMeta& meta, KvCache& cache);

 private:
  struct Layer {
    kernels::Tensor input_norm, post_norm;  // (1, dim)
    kernels::Tensor qkv;                    // (q_dim + 2 kv_dim, dim)
    kernels::Tensor qkv_bias;               // (1, q_dim + 2 kv_dim) or empty
    kernels::Tensor o, o_bias;              // (dim, q_dim), (1, dim) or empty
    kernels::Tensor gate_up;                // (2 ffn, dim)
    kernels::Tensor gate_up_bias;           // (1, 2 ffn) or empty
    kernels::Tensor down, down_bias;        // (dim, ffn), (1, dim) or empty
    kernels::Tensor q_norm, k_norm;         // (1, head_dim) or empty (Qwen3 only)
  };

  Model(const formats::ModelConfig& config, kernels::Backend* backend,
        const ForwardOptions& options)
      : config_(config), backend_(backend), options_(options) {}
  // One scratch tensor: the member it lands in, its shape and dtype.
  struct ScratchTensor {
    kernels::Tensor Model::*member;
    int64_t rows = 0;
    int64_t cols = 0;
    DType dtype = DType::kF32;
  };
  static std::vector<ScratchTensor> scratch_tensors(const formats::ModelConfig& config,
                                                    const ForwardOptions& options, DType dtype);

  Status load_weights(WeightSource& source);
  Status allocate_scratch();
  Status layer_forward(int64_t l, const kernels::StepMeta& meta, KvCache& cache, int64_t n,
                       bool lora);
  // Layer l's LoRA branch for one group: `input` shrunk through the group's A's into `tmp`, then
  // expanded into `outs` (one per projection of the group, in order).
  Status lora_forward(int64_t l, formats::LoraGroup group, const kernels::Tensor& input,
                      std::initializer_list<kernels::Tensor> outs, const kernels::Tensor& tmp);

  formats::ModelConfig config_;
  kernels::Backend* backend_;
  ForwardOptions options_;
  std::vector<kernels::DeviceBuffer> buffers_;  // every weight and scratch allocation
  size_t weight_bytes_ = 0;
  DType weight_dtype_ = DType::kF32;
  kernels::Tensor embed_, final_norm_, lm_head_, inv_freq_;
  std::vector<Layer> layers_;
  // Scratch activations, (max_rows, width) each.
  kernels::Tensor hidden_, normed_, qkv_out_, attn_out_, proj_out_, gate_up_out_, act_out_,
      lora_tmp_;
  kernels::Tensor final_rows_, logits_;  // (max_logits_rows, dim), (max_logits_rows, vocab)
};

// f32 inverse frequencies of RoPE for `config` (rope_scaling applied), as Hugging Face computes
// them.
std::vector<float> rope_inverse_frequencies(const formats::ModelConfig& config);

}  // namespace loraserve::engine
