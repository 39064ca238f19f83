// A PEFT LoRA adapter folder's adapter_config.json, parsed and validated, with PEFT's rules for
// which modules an adapter targets and at which rank and alpha. Pure parsing: no weights here.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace loraserve::formats {

struct PeftConfig {
  int64_t r = 8;
  double lora_alpha = 8.0;
  bool use_rslora = false;
  // Either a list of module names (matched as PEFT does: the whole key, or its last dotted parts)
  // or one regular expression that must match the whole module key.
  std::vector<std::string> target_modules;
  std::optional<std::string> target_modules_regex;
  std::vector<std::string> exclude_modules;
  std::optional<std::string> exclude_modules_regex;
  // Patterns in file order (PEFT tries them in insertion order).
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  std::optional<std::vector<int64_t>> layers_to_transform;
  std::vector<std::string> layers_pattern;
  std::string base_model_name_or_path;
};

// Parses adapter_config.json text (`source` names it in errors). Refuses, saying what is not
// supported: a peft_type other than LORA, DoRA, modules_to_save, bias other than "none",
// lora_bias, layer_replication, trainable_token_indices, target_parameters.
Result<PeftConfig> parse_peft_config(const std::string& json_text, const std::string& source);
Result<PeftConfig> load_peft_config(const std::string& dir);

// PEFT's check_target_module_exists for a module key such as "model.layers.3.self_attn.q_proj".
Result<bool> peft_targets(const PeftConfig& config, const std::string& module_key);
// Rank and alpha PEFT gives `module_key` (rank_pattern / alpha_pattern matched with
// get_pattern_key: the first pattern p with re.match(r"(.*\.)?(p)$", key)).
Result<std::pair<int64_t, double>> peft_rank_and_alpha(const PeftConfig& config, const std::string& module_key);
// lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA.
double peft_scale(const PeftConfig& config, int64_t rank, double alpha);

// Python-compatible regex matching through PCRE2. `full`: the whole subject must match
// (re.fullmatch); otherwise the match is anchored at the start only (re.match).
Result<bool> regex_match(const std::string& pattern, const std::string& subject, bool full);

}  // namespace loraserve::formats
