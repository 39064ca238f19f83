#include "formats/hf_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace loraserve::formats {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

Result<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found_error("{}: cannot open", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Reads a required positive integer field.
Result<int64_t> positive_int(const json& j, const char* key, const std::string& source) {
  if (!j.contains(key) || j[key].is_null())
    return invalid_argument_error("{}: missing field '{}'", source, key);
  if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0) {
    return invalid_argument_error("{}: field '{}' must be a positive integer, got {}", source, key,
                                  j[key].dump());
  }
  return j[key].get<int64_t>();
}

Result<double> positive_number(const json& j, const char* key, double fallback,
                               const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number() || !(j[key].get<double>() > 0)) {
    return invalid_argument_error("{}: field '{}' must be a positive number, got {}", source, key,
                                  j[key].dump());
  }
  return j[key].get<double>();
}

Result<bool> boolean_field(const json& j, const char* key, bool fallback,
                           const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean())
    return invalid_argument_error("{}: field '{}' must be true or false", source, key);
  return j[key].get<bool>();
}

// eos_token_id may be an int or a list of ints.
Status append_token_ids(const json& j, const char* key, const std::string& source,
                        std::vector<int32_t>* out) {
  if (!j.contains(key) || j[key].is_null()) return ok_status();
  auto add = [&](const json& v) -> Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0) {
      return invalid_argument_error("{}: field '{}' must hold non-negative token ids, got {}",
                                    source, key, v.dump());
    }
    const auto id = static_cast<int32_t>(v.get<int64_t>());
    if (std::find(out->begin(), out->end(), id) == out->end()) out->push_back(id);
    return ok_status();
  };
  if (j[key].is_array()) {
    for (const json& v : j[key]) LS_RETURN_IF_ERROR(add(v));
    return ok_status();
  }
  return add(j[key]);
}

Status parse_rope_scaling(const json& j, const std::string& source, RopeScaling* out) {
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return ok_status();
  const json& r = j["rope_scaling"];
  if (!r.is_object()) return invalid_argument_error("{}: rope_scaling must be an object", source);
  std::string type;
  if (r.contains("rope_type") && r["rope_type"].is_string())
    type = r["rope_type"].get<std::string>();
  else if (r.contains("type") && r["type"].is_string())
    type = r["type"].get<std::string>();
  if (type == "default" || type.empty()) return ok_status();
  LS_ASSIGN_OR_RETURN(out->factor, positive_number(r, "factor", 1.0, source + " rope_scaling"));
  if (type == "linear") {
    out->type = RopeScaling::Type::kLinear;
    return ok_status();
  }
  if (type == "llama3") {
    out->type = RopeScaling::Type::kLlama3;
    LS_ASSIGN_OR_RETURN(out->low_freq_factor,
                        positive_number(r, "low_freq_factor", 1.0, source + " rope_scaling"));
    LS_ASSIGN_OR_RETURN(out->high_freq_factor,
                        positive_number(r, "high_freq_factor", 4.0, source + " rope_scaling"));
    LS_ASSIGN_OR_RETURN(
        out->original_max_position_embeddings,
        positive_int(r, "original_max_position_embeddings", source + " rope_scaling"));
    if (out->high_freq_factor <= out->low_freq_factor) {
      return invalid_argument_error("{}: rope_scaling high_freq_factor must exceed low_freq_factor",
                                    source);
    }
    return ok_status();
  }
  return invalid_argument_error(
      "{}: rope_scaling type '{}' is not supported (supported: default, linear, llama3)", source,
      type);
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
  return p == Projection::kQ || p == Projection::kK || p == Projection::kV || p == Projection::kO ? "self_attn" : "mlp";
}

int64_t ModelConfig::parameter_count() const {
  const int64_t d = hidden_size;
  int64_t layer = d * (q_dim() + 2 * kv_dim()) + q_dim() * d + 3 * d * intermediate_size + 2 * d;
  if (qkv_bias) layer += q_dim() + 2 * kv_dim();
  if (o_bias) layer += d;
  if (mlp_bias) layer += 2 * intermediate_size + d;
  if (qk_norm) layer += 2 * head_dim;
  int64_t total = num_layers * layer + vocab_size * d + d;
  if (!tie_word_embeddings) total += vocab_size * d;
  return total;
}

Result<ModelConfig> parse_model_config(const std::string& text, const std::string& source) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return invalid_argument_error("{}: not a JSON object", source);
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
        "{}: architecture '{}' is not supported (supported: LlamaForCausalLM, MistralForCausalLM, "
        "Qwen2ForCausalLM, Qwen3ForCausalLM)",
        source, c.architecture_name);
  }
  LS_ASSIGN_OR_RETURN(c.hidden_size, positive_int(j, "hidden_size", source));
  LS_ASSIGN_OR_RETURN(c.intermediate_size, positive_int(j, "intermediate_size", source));
  LS_ASSIGN_OR_RETURN(c.num_layers, positive_int(j, "num_hidden_layers", source));
  LS_ASSIGN_OR_RETURN(c.num_heads, positive_int(j, "num_attention_heads", source));
  LS_ASSIGN_OR_RETURN(c.vocab_size, positive_int(j, "vocab_size", source));
  LS_ASSIGN_OR_RETURN(c.max_position_embeddings,
                      positive_int(j, "max_position_embeddings", source));
  if (j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()) {
    LS_ASSIGN_OR_RETURN(c.num_kv_heads, positive_int(j, "num_key_value_heads", source));
  } else {
    c.num_kv_heads = c.num_heads;
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return invalid_argument_error(
        "{}: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})", source,
        c.num_heads, c.num_kv_heads);
  }
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
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
  LS_ASSIGN_OR_RETURN(c.rope_theta, positive_number(j, "rope_theta", 10000.0, source));
  LS_RETURN_IF_ERROR(parse_rope_scaling(j, source, &c.rope_scaling));
  LS_ASSIGN_OR_RETURN(c.tie_word_embeddings,
                      boolean_field(j, "tie_word_embeddings", false, source));
  if (j.contains("hidden_act") && j["hidden_act"].is_string() && j["hidden_act"] != "silu") {
    return invalid_argument_error("{}: hidden_act '{}' is not supported (only silu)", source,
                                  j["hidden_act"].get<std::string>());
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
  c.max_context = c.max_position_embeddings;
  const bool sliding = c.architecture == Architecture::kMistral ||
                       (j.contains("use_sliding_window") && j["use_sliding_window"].is_boolean() &&
                        j["use_sliding_window"].get<bool>());
  if (sliding && j.contains("sliding_window") && j["sliding_window"].is_number_integer() &&
      j["sliding_window"].get<int64_t>() > 0) {
    c.max_context = std::min<int64_t>(c.max_context, j["sliding_window"].get<int64_t>());
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string())
    c.torch_dtype = j["torch_dtype"].get<std::string>();
  else if (j.contains("dtype") && j["dtype"].is_string())
    c.torch_dtype = j["dtype"].get<std::string>();
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) {
    c.bos_token_id = static_cast<int32_t>(j["bos_token_id"].get<int64_t>());
  }
  LS_RETURN_IF_ERROR(append_token_ids(j, "eos_token_id", source, &c.eos_token_ids));
  for (int32_t id : c.eos_token_ids) {
    if (id >= c.vocab_size) {
      return invalid_argument_error("{}: eos_token_id {} is outside the vocabulary ({})", source,
                                    id, c.vocab_size);
    }
  }
  return c;
}

Status merge_generation_config(const std::string& text, const std::string& source,
                               ModelConfig* config) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return invalid_argument_error("{}: not a JSON object", source);
  std::vector<int32_t> ids = config->eos_token_ids;
  LS_RETURN_IF_ERROR(append_token_ids(j, "eos_token_id", source, &ids));
  for (int32_t id : ids) {
    if (id >= config->vocab_size) {
      return invalid_argument_error("{}: eos_token_id {} is outside the vocabulary ({})", source,
                                    id, config->vocab_size);
    }
  }
  config->eos_token_ids = ids;
  if (config->bos_token_id < 0 && j.contains("bos_token_id") &&
      j["bos_token_id"].is_number_integer()) {
    config->bos_token_id = static_cast<int32_t>(j["bos_token_id"].get<int64_t>());
  }
  return ok_status();
}

Result<ModelConfig> load_model_config(const std::string& dir) {
  const fs::path config_path = fs::path(dir) / "config.json";
  if (!fs::is_directory(dir)) return not_found_error("model folder '{}' does not exist", dir);
  LS_ASSIGN_OR_RETURN(std::string text, read_file(config_path));
  LS_ASSIGN_OR_RETURN(ModelConfig config, parse_model_config(text, config_path.string()));
  const fs::path gen_path = fs::path(dir) / "generation_config.json";
  if (fs::exists(gen_path)) {
    LS_ASSIGN_OR_RETURN(std::string gen, read_file(gen_path));
    LS_RETURN_IF_ERROR(merge_generation_config(gen, gen_path.string(), &config));
  }
  return config;
}

}  // namespace loraserve::formats
