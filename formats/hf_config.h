// A Hugging Face causal-LM folder's config.json (+ generation_config.json), parsed and validated
// into a plain ModelConfig. Pure parsing: no weights are read here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/untrusted_file.h"

namespace loraserve::formats {

enum class Architecture { kLlama, kMistral, kQwen2, kQwen3 };
std::string_view architecture_name(Architecture a);

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as in config.json, e.g. "LlamaForCausalLM"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // explicit in config.json, else hidden_size / num_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  // Longest context served: max_position_embeddings, or Mistral's sliding_window when smaller
  // (attention beyond the window would differ from the reference, so the context stops there).
  int64_t max_context = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;      // Qwen2; Llama with attention_bias
  bool o_bias = false;        // Llama with attention_bias
  bool mlp_bias = false;      // Llama with mlp_bias
  bool qk_norm = false;       // Qwen3: RMSNorm over each head of q and k before RoPE
  std::string torch_dtype;    // "bfloat16", ... ("" when absent)
  int32_t bos_token_id = -1;  // -1: none
  // End-of-sequence ids: config.json's eos_token_id (int or list) ∪ generation_config.json's.
  std::vector<int32_t> eos_token_ids;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // Parameter count of the weights the engine loads (embeddings, layers, final norm, lm_head).
  // Fits in int64 for every config parse_model_config accepts (-1 for one it would refuse).
  int64_t parameter_count() const;
};

// The seven linear projections of a decoder layer, the ones LoRA adapters can target.
enum class Projection : int32_t { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int32_t kNumProjections = 7;
inline constexpr Projection kAllProjections[] = {
    Projection::kQ,    Projection::kK,  Projection::kV,   Projection::kO,
    Projection::kGate, Projection::kUp, Projection::kDown};
// How LoRA groups the projections: those that read the same input — {q, k, v}, {o}, {gate, up},
// {down} — share one shrink, their A's stored side by side so that one GEMM computes them all.
// The model runs one shrink and one expand per group (in this order, a layer's), adapters lay
// out their A's group by group, a backend takes one group's tables per call, and the LoRA
// scratch is kMaxLoraGroupSize times the largest rank wide.
struct LoraGroup {
  Projection first;  // the group is first .. first + size - 1, consecutive in Projection order
  int32_t size;

  constexpr Projection at(int32_t k) const {
    return static_cast<Projection>(static_cast<int32_t>(first) + k);
  }
};
inline constexpr LoraGroup kLoraGroups[] = {
    {Projection::kQ, 3}, {Projection::kO, 1}, {Projection::kGate, 2}, {Projection::kDown, 1}};
inline constexpr LoraGroup kLoraQkv = kLoraGroups[0], kLoraO = kLoraGroups[1],
                           kLoraGateUp = kLoraGroups[2], kLoraDown = kLoraGroups[3];
inline constexpr int32_t kMaxLoraGroupSize = [] {
  int32_t most = 0;
  for (const LoraGroup& g : kLoraGroups) most = g.size > most ? g.size : most;
  return most;
}();
static_assert(kLoraDown.at(0) == Projection::kDown && kLoraGateUp.at(1) == Projection::kUp,
              "the groups cover the projections in order");

std::string_view projection_name(Projection p);  // "q_proj", ...
// "self_attn" or "mlp": the block that holds the projection.
std::string_view projection_block(Projection p);
// (out, in) of a projection's weight in this model.
std::pair<int64_t, int64_t> projection_shape(const ModelConfig& c, Projection p);

// Parses `<dir>/config.json` and, when present, `<dir>/generation_config.json`. NOT_FOUND when
// the folder or config.json is absent; INVALID_ARGUMENT naming the file and field when a value
// is malformed or out of range: sizes are integers in [1, 2^31), their products (the parameter
// count) fit in 64 bits, floats are finite and positive, token ids lie in the vocabulary.
Result<ModelConfig> load_model_config(const std::string& dir);
Result<ModelConfig> load_model_config(const Folder& dir);
// Parses config.json text (`source` names it in errors); exposed for tests and fuzzing.
Result<ModelConfig> parse_model_config(const std::string& json_text, const std::string& source);
// Adds generation_config.json's eos ids (and bos when config.json had none).
Status merge_generation_config(const std::string& json_text, const std::string& source,
                               ModelConfig* config);

}  // namespace loraserve::formats
