#include "formats/hf_config.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/checked_math.h"
#include "common/excerpt.h"
#include "common/untrusted_file.h"
#include "common/untrusted_json.h"

namespace loraserve::formats {
namespace {

using nlohmann::json;

// Largest value of a size field (dimensions, counts, positions): they become int32 dimensions
// and token positions further down.
constexpr int64_t kMaxSize = INT32_MAX;
// eos_token_id lists longer than this are refused (real models list a handful).
constexpr size_t kMaxEosIds = 1024;

// Reads a required integer field in [1, max].
Result<int64_t> positive_int(const json& j, const char* key, const std::string& source,
                             int64_t max = kMaxSize) {
  if (!has_field(j, key)) return invalid_argument_error("{}: missing field '{}'", source, key);
  const json& v = j[key];
  const auto x = json_int_in_range(v, 1, max);
  if (!x) {
    return invalid_argument_error("{}: field '{}' must be a positive integer (at most {}), got {}",
                                  source, key, max, json_excerpt(v));
  }
  return *x;
}

// Reads an optional finite positive number (`fallback` when absent or null).
Result<double> positive_number(const json& j, const char* key, double fallback,
                               const std::string& source) {
  if (!has_field(j, key)) return fallback;
  const json& v = j[key];
  if (!v.is_number() || !std::isfinite(v.get<double>()) || !(v.get<double>() > 0)) {
    return invalid_argument_error("{}: field '{}' must be a finite positive number, got {}", source,
                                  key, json_excerpt(v));
  }
  return v.get<double>();
}

Result<bool> boolean_field(const json& j, const char* key, bool fallback,
                           const std::string& source) {
  if (!has_field(j, key)) return fallback;
  if (!j[key].is_boolean()) {
    return invalid_argument_error("{}: field '{}' must be true or false, got {}", source, key,
                                  json_excerpt(j[key]));
  }
  return j[key].get<bool>();
}

// A token id of a vocabulary of `vocab_size`, read from field `key`.
Result<int32_t> token_id(const json& v, const char* key, int64_t vocab_size,
                         const std::string& source) {
  // Checked as a 64-bit value before any narrowing, so 2^32 + 1 is not taken for 1.
  const auto id = json_int_in_range(v, 0, vocab_size - 1);
  if (!id) {
    return invalid_argument_error(
        "{}: field '{}' must hold token ids in [0, {}) (the vocabulary), got {}", source, key,
        vocab_size, json_excerpt(v));
  }
  return static_cast<int32_t>(*id);
}

// eos_token_id may be an int or a list of ints; each is added to `out` once.
Status append_token_ids(const json& j, const char* key, int64_t vocab_size,
                        const std::string& source, std::vector<int32_t>* out) {
  if (!has_field(j, key)) return ok_status();
  const json& v = j[key];
  if (v.is_array() && v.size() > kMaxEosIds) {
    return invalid_argument_error("{}: field '{}' lists {} token ids; at most {} are accepted",
                                  source, key, v.size(), kMaxEosIds);
  }
  for (const json& id_value : v.is_array() ? v : json::array({v})) {
    LS_ASSIGN_OR_RETURN(const int32_t id, token_id(id_value, key, vocab_size, source));
    if (std::find(out->begin(), out->end(), id) == out->end()) out->push_back(id);
  }
  return ok_status();
}

// The RoPE scaling in object `r`, named `name` in errors: transformers 4's rope_scaling, or
// transformers 5's rope_parameters (the same keys, with rope_theta beside them).
Status parse_rope_scaling(const json& r, const std::string& name, const std::string& source,
                          RopeScaling* out) {
  std::string type;
  bool typed = false;
  for (const char* key : {"rope_type", "type"}) {
    if (!has_field(r, key)) continue;
    if (!r[key].is_string()) {
      return invalid_argument_error("{}: {}.{} must be a string, got {}", source, name, key,
                                    json_excerpt(r[key]));
    }
    type = r[key].get<std::string>();
    typed = true;
    break;
  }
  // transformers fails to build a model whose scaling names no type (its RoPE table has none).
  if (!typed || type.empty()) {
    return invalid_argument_error(
        "{}: {} has no rope_type (e.g. \"default\", \"linear\", "
        "\"llama3\")",
        source, name);
  }
  if (type == "default") return ok_status();
  LS_ASSIGN_OR_RETURN(out->factor, positive_number(r, "factor", 1.0, source + " " + name));
  if (type == "linear") {
    out->type = RopeScaling::Type::kLinear;
    return ok_status();
  }
  if (type == "llama3") {
    out->type = RopeScaling::Type::kLlama3;
    LS_ASSIGN_OR_RETURN(out->low_freq_factor,
                        positive_number(r, "low_freq_factor", 1.0, source + " " + name));
    LS_ASSIGN_OR_RETURN(out->high_freq_factor,
                        positive_number(r, "high_freq_factor", 4.0, source + " " + name));
    LS_ASSIGN_OR_RETURN(out->original_max_position_embeddings,
                        positive_int(r, "original_max_position_embeddings", source + " " + name));
    if (out->high_freq_factor <= out->low_freq_factor) {
      return invalid_argument_error("{}: {} high_freq_factor must exceed low_freq_factor", source,
                                    name);
    }
    return ok_status();
  }
  return invalid_argument_error(
      "{}: {} type {} is not supported (supported: default, linear, llama3)", source, name,
      excerpt(type));
}

// rope_theta and the scaling: transformers 5 writes both in rope_parameters (and no rope_theta or
// rope_scaling beside it); earlier versions write rope_theta and rope_scaling.
Status parse_rope(const json& j, const std::string& source, double* theta, RopeScaling* scaling) {
  LS_ASSIGN_OR_RETURN(*theta, positive_number(j, "rope_theta", 10000.0, source));
  if (has_field(j, "rope_parameters")) {
    const json& p = j["rope_parameters"];
    if (!p.is_object()) {
      return invalid_argument_error("{}: rope_parameters must be an object, got {}", source,
                                    json_excerpt(p));
    }
    // Models with several attention types give one object per type; a Llama has one.
    for (const auto& [key, value] : p.items()) {
      if (value.is_object()) {
        return invalid_argument_error(
            "{}: rope_parameters.{} holds per-layer-type RoPE parameters, which Llama-family "
            "models do not have",
            source, excerpt(key));
      }
    }
    LS_ASSIGN_OR_RETURN(*theta,
                        positive_number(p, "rope_theta", *theta, source + " rope_parameters"));
    return parse_rope_scaling(p, "rope_parameters", source, scaling);
  }
  if (!has_field(j, "rope_scaling")) return ok_status();
  const json& r = j["rope_scaling"];
  if (!r.is_object()) {
    return invalid_argument_error("{}: rope_scaling must be an object, got {}", source,
                                  json_excerpt(r));
  }
  return parse_rope_scaling(r, "rope_scaling", source, scaling);
}

}  // namespace

std::string_view architecture_name(Architecture a) {
  switch (a) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kMistral:
      return "mistral";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kQwen3:
      return "qwen3";
  }
  return "?";
}

std::string_view projection_name(Projection p) {
  switch (p) {
    case Projection::kQ:
      return "q_proj";
    case Projection::kK:
      return "k_proj";
    case Projection::kV:
      return "v_proj";
    case Projection::kO:
      return "o_proj";
    case Projection::kGate:
      return "gate_proj";
    case Projection::kUp:
      return "up_proj";
    case Projection::kDown:
      return "down_proj";
  }
  return "?";
}

std::pair<int64_t, int64_t> projection_shape(const ModelConfig& c, Projection p) {
  switch (p) {
    case Projection::kQ:
      return {c.q_dim(), c.hidden_size};
    case Projection::kK:
    case Projection::kV:
      return {c.kv_dim(), c.hidden_size};
    case Projection::kO:
      return {c.hidden_size, c.q_dim()};
    case Projection::kGate:
    case Projection::kUp:
      return {c.intermediate_size, c.hidden_size};
    case Projection::kDown:
      return {c.hidden_size, c.intermediate_size};
  }
  return {0, 0};
}

std::string_view projection_block(Projection p) {
  return p == Projection::kQ || p == Projection::kK || p == Projection::kV || p == Projection::kO
             ? "self_attn"
             : "mlp";
}

namespace {

// The parameter count, or nullopt when it (or any product on the way) overflows int64: sizes
// come from config.json, and a product of them must not be computed unchecked.
std::optional<int64_t> count_parameters(const ModelConfig& c) {
  bool overflow = false;
  const auto mul = [&](int64_t a, int64_t b) {
    int64_t r = 0;
    overflow |= __builtin_mul_overflow(a, b, &r);
    return r;
  };
  const auto add = [&](int64_t a, int64_t b) {
    int64_t r = 0;
    overflow |= __builtin_add_overflow(a, b, &r);
    return r;
  };
  const int64_t d = c.hidden_size;
  const int64_t q = mul(c.num_heads, c.head_dim);
  const int64_t kv = mul(c.num_kv_heads, c.head_dim);
  int64_t layer = add(mul(d, add(q, mul(2, kv))), mul(q, d));
  layer = add(layer, add(mul(mul(3, d), c.intermediate_size), mul(2, d)));
  if (c.qkv_bias) layer = add(layer, add(q, mul(2, kv)));
  if (c.o_bias) layer = add(layer, d);
  if (c.mlp_bias) layer = add(layer, add(mul(2, c.intermediate_size), d));
  if (c.qk_norm) layer = add(layer, mul(2, c.head_dim));
  const int64_t embed = mul(c.vocab_size, d);
  int64_t total = add(add(mul(c.num_layers, layer), embed), d);
  if (!c.tie_word_embeddings) total = add(total, embed);
  if (overflow) return std::nullopt;
  return total;
}

}  // namespace

int64_t ModelConfig::parameter_count() const { return count_parameters(*this).value_or(-1); }

Result<ModelConfig> parse_model_config(const std::string& text, const std::string& source) {
  LS_ASSIGN_OR_RETURN(const json j, parse_untrusted_json(text, source));
  if (!j.is_object()) {
    return invalid_argument_error("{}: not a JSON object (got {})", source, json_excerpt(j));
  }
  ModelConfig c;
  if (!j.contains("architectures") || !j["architectures"].is_array() ||
      j["architectures"].empty() || !j["architectures"][0].is_string()) {
    return invalid_argument_error("{}: missing field 'architectures' (e.g. [\"LlamaForCausalLM\"])",
                                  source);
  }
  c.architecture_name = j["architectures"][0].get<std::string>();
  if (c.architecture_name == "LlamaForCausalLM")
    c.architecture = Architecture::kLlama;
  else if (c.architecture_name == "MistralForCausalLM")
    c.architecture = Architecture::kMistral;
  else if (c.architecture_name == "Qwen2ForCausalLM")
    c.architecture = Architecture::kQwen2;
  else if (c.architecture_name == "Qwen3ForCausalLM")
    c.architecture = Architecture::kQwen3;
  else {
    return invalid_argument_error(
        "{}: architecture {} is not supported (supported: LlamaForCausalLM, MistralForCausalLM, "
        "Qwen2ForCausalLM, Qwen3ForCausalLM)",
        source, excerpt(c.architecture_name));
  }
  LS_ASSIGN_OR_RETURN(c.hidden_size, positive_int(j, "hidden_size", source));
  LS_ASSIGN_OR_RETURN(c.intermediate_size, positive_int(j, "intermediate_size", source));
  LS_ASSIGN_OR_RETURN(c.num_layers, positive_int(j, "num_hidden_layers", source));
  LS_ASSIGN_OR_RETURN(c.num_heads, positive_int(j, "num_attention_heads", source));
  LS_ASSIGN_OR_RETURN(c.vocab_size, positive_int(j, "vocab_size", source));
  LS_ASSIGN_OR_RETURN(c.max_position_embeddings,
                      positive_int(j, "max_position_embeddings", source));
  if (has_field(j, "num_key_value_heads")) {
    LS_ASSIGN_OR_RETURN(c.num_kv_heads, positive_int(j, "num_key_value_heads", source));
  } else {
    c.num_kv_heads = c.num_heads;
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return invalid_argument_error(
        "{}: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})", source,
        c.num_heads, c.num_kv_heads);
  }
  if (has_field(j, "head_dim")) {
    LS_ASSIGN_OR_RETURN(c.head_dim, positive_int(j, "head_dim", source));
  } else if (c.architecture == Architecture::kQwen3) {
    c.head_dim = 128;  // transformers' Qwen3Config default, not hidden_size / heads
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      return invalid_argument_error(
          "{}: hidden_size ({}) is not a multiple of num_attention_heads ({}) and no head_dim is "
          "given",
          source, c.hidden_size, c.num_heads);
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0)
    return invalid_argument_error("{}: head_dim ({}) must be even for RoPE", source, c.head_dim);
  LS_ASSIGN_OR_RETURN(c.rms_norm_eps, positive_number(j, "rms_norm_eps", 1e-6, source));
  // Past these the f32 arithmetic overflows (every activation NaN, every answer token 0) where a
  // float64 reference would not; no trained model comes near them.
  if (c.rms_norm_eps >= 1.0) {
    return invalid_argument_error("{}: field 'rms_norm_eps' must be below 1, got {}", source,
                                  c.rms_norm_eps);
  }
  LS_RETURN_IF_ERROR(parse_rope(j, source, &c.rope_theta, &c.rope_scaling));
  if (c.rope_theta < 1.0) {
    return invalid_argument_error("{}: rope_theta must be at least 1, got {}", source,
                                  c.rope_theta);
  }
  LS_ASSIGN_OR_RETURN(c.tie_word_embeddings,
                      boolean_field(j, "tie_word_embeddings", false, source));
  if (has_field(j, "hidden_act") && j["hidden_act"] != "silu") {
    return invalid_argument_error("{}: hidden_act {} is not supported (only \"silu\")", source,
                                  json_excerpt(j["hidden_act"]));
  }
  switch (c.architecture) {
    case Architecture::kLlama: {
      LS_ASSIGN_OR_RETURN(bool attention_bias, boolean_field(j, "attention_bias", false, source));
      c.qkv_bias = c.o_bias = attention_bias;
      LS_ASSIGN_OR_RETURN(c.mlp_bias, boolean_field(j, "mlp_bias", false, source));
      break;
    }
    case Architecture::kMistral:
      break;
    case Architecture::kQwen2:
      c.qkv_bias = true;
      break;
    case Architecture::kQwen3: {
      LS_ASSIGN_OR_RETURN(bool attention_bias, boolean_field(j, "attention_bias", false, source));
      c.qkv_bias = c.o_bias = attention_bias;
      c.qk_norm = true;
      break;
    }
  }
  const auto q_dim = checked_mul(c.num_heads, c.head_dim);
  const auto kv_dim = checked_mul(c.num_kv_heads, c.head_dim);
  if (!q_dim || *q_dim > kMaxSize || !kv_dim || *kv_dim > kMaxSize) {
    return invalid_argument_error("{}: num_attention_heads x head_dim ({} x {}) must be at most {}",
                                  source, c.num_heads, c.head_dim, kMaxSize);
  }
  if (!count_parameters(c)) {
    return invalid_argument_error(
        "{}: the model's sizes (hidden_size {}, intermediate_size {}, num_hidden_layers {}, "
        "vocab_size {}) give a parameter count beyond 64 bits",
        source, c.hidden_size, c.intermediate_size, c.num_layers, c.vocab_size);
  }
  c.max_context = c.max_position_embeddings;
  LS_ASSIGN_OR_RETURN(const bool use_sliding_window,
                      boolean_field(j, "use_sliding_window", false, source));
  const bool sliding = c.architecture == Architecture::kMistral || use_sliding_window;
  if (sliding && has_field(j, "sliding_window")) {
    LS_ASSIGN_OR_RETURN(const int64_t window, positive_int(j, "sliding_window", source));
    c.max_context = std::min<int64_t>(c.max_context, window);
  }
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (!has_field(j, key)) continue;
    if (!j[key].is_string()) {
      return invalid_argument_error("{}: field '{}' must be a string, got {}", source, key,
                                    json_excerpt(j[key]));
    }
    c.torch_dtype = j[key].get<std::string>();
    break;
  }
  if (has_field(j, "bos_token_id")) {
    LS_ASSIGN_OR_RETURN(c.bos_token_id,
                        token_id(j["bos_token_id"], "bos_token_id", c.vocab_size, source));
  }
  LS_RETURN_IF_ERROR(append_token_ids(j, "eos_token_id", c.vocab_size, source, &c.eos_token_ids));
  return c;
}

Status merge_generation_config(const std::string& text, const std::string& source,
                               ModelConfig* config) {
  LS_ASSIGN_OR_RETURN(const json j, parse_untrusted_json(text, source));
  if (!j.is_object()) {
    return invalid_argument_error("{}: not a JSON object (got {})", source, json_excerpt(j));
  }
  std::vector<int32_t> ids = config->eos_token_ids;
  LS_RETURN_IF_ERROR(append_token_ids(j, "eos_token_id", config->vocab_size, source, &ids));
  int32_t bos = config->bos_token_id;
  if (has_field(j, "bos_token_id")) {
    LS_ASSIGN_OR_RETURN(const int32_t id,
                        token_id(j["bos_token_id"], "bos_token_id", config->vocab_size, source));
    if (bos < 0) bos = id;
  }
  config->eos_token_ids = std::move(ids);
  config->bos_token_id = bos;
  return ok_status();
}

Result<ModelConfig> load_model_config(const std::string& dir) {
  auto folder = Folder::open(dir);
  if (!folder.ok()) {
    if (folder.status().code() == StatusCode::kNotFound)
      return not_found_error("model folder {} does not exist", shown_path(dir));
    return folder.status();
  }
  return load_model_config(*folder);
}

Result<ModelConfig> load_model_config(const Folder& dir) {
  const ConfigFileCap cap = config_file_cap();
  LS_ASSIGN_OR_RETURN(const ReadOnlyFile config_file, dir.open_file("config.json"));
  LS_ASSIGN_OR_RETURN(const std::string text, config_file.read_all(cap.bytes, cap.flag));
  LS_ASSIGN_OR_RETURN(ModelConfig config, parse_model_config(text, config_file.name()));
  if (dir.has("generation_config.json")) {
    LS_ASSIGN_OR_RETURN(const ReadOnlyFile gen_file, dir.open_file("generation_config.json"));
    LS_ASSIGN_OR_RETURN(const std::string gen, gen_file.read_all(cap.bytes, cap.flag));
    LS_RETURN_IF_ERROR(merge_generation_config(gen, gen_file.name(), &config));
  }
  return config;
}

}  // namespace loraserve::formats
