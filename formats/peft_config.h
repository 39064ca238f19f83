// A PEFT LoRA adapter folder's adapter_config.json, parsed and validated, with PEFT's rules for
// which modules an adapter targets and at which rank and alpha. Pure parsing: no weights here.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/untrusted_file.h"

namespace loraserve::formats {

// A regular expression from adapter_config.json, compiled once through PCRE2 (UTF), anchored
// at the start and, when `full`, at the end: Python's re.match / re.fullmatch for the patterns
// PEFT writes. A match has a step budget, so a pattern that backtracks catastrophically fails
// with INVALID_ARGUMENT instead of running for hours. Immutable; copies share the compiled
// code; thread-safe.
class PatternRegex {
 public:
  // `field` names where the pattern came from in errors ("target_modules").
  static Result<PatternRegex> compile(const std::string& pattern, bool full,
                                      const std::string& field);
  // Whether `subject` matches; when it does and `group1` is given, the first capture group.
  Result<bool> match(std::string_view subject, std::string* group1 = nullptr) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::string pattern_;
  std::string field_;
  std::shared_ptr<const Code> code_;
};

// A rank_pattern / alpha_pattern entry: the pattern as written, compiled as PEFT's
// get_pattern_key matches it (re.match(r"(.*\.)?(p)$", key)), and its value.
template <typename T>
struct KeyPattern {
  std::string pattern;
  PatternRegex regex;
  T value;
};

struct PeftConfig {
  int64_t r = 8;
  double lora_alpha = 8.0;
  bool use_rslora = false;
  // Either a list of module names (matched as PEFT does: the whole key, or its last dotted parts)
  // or one regular expression that must match the whole module key.
  std::vector<std::string> target_modules;
  std::optional<PatternRegex> target_modules_regex;
  std::vector<std::string> exclude_modules;
  std::optional<PatternRegex> exclude_modules_regex;
  // Patterns in file order (PEFT tries them in insertion order).
  std::vector<KeyPattern<int64_t>> rank_pattern;
  std::vector<KeyPattern<double>> alpha_pattern;
  std::optional<std::vector<int64_t>> layers_to_transform;
  // The layer index extractors PEFT builds from layers_pattern (or its default one).
  std::vector<PatternRegex> layer_index_patterns;
  std::string base_model_name_or_path;
};

// Most entries accepted in one list or map of adapter_config.json (target_modules,
// rank_pattern, ...): far above any real adapter, low enough that matching every module of a
// model against every pattern stays quick.
inline constexpr size_t kMaxPeftEntries = 4096;

// Parses adapter_config.json text (`source` names it in errors). Every field is checked for type
// and range, naming the field (r and ranks in [1, 2^31), lora_alpha and alphas finite,
// layer indices non-negative) and every regular expression is compiled here, so a bad one names
// the file and the field. Refuses, saying what is not supported: a peft_type other than LORA,
// DoRA, modules_to_save, bias other than "none", lora_bias, layer_replication,
// trainable_token_indices, target_parameters.
Result<PeftConfig> parse_peft_config(const std::string& json_text, const std::string& source);
Result<PeftConfig> load_peft_config(const Folder& dir);

// PEFT's check_target_module_exists for a module key such as "model.layers.3.self_attn.q_proj".
Result<bool> peft_targets(const PeftConfig& config, const std::string& module_key);
// Rank and alpha PEFT gives `module_key` (rank_pattern / alpha_pattern matched with
// get_pattern_key: the first pattern p with re.match(r"(.*\.)?(p)$", key)).
Result<std::pair<int64_t, double>> peft_rank_and_alpha(const PeftConfig& config,
                                                       const std::string& module_key);
// lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA.
double peft_scale(const PeftConfig& config, int64_t rank, double alpha);

}  // namespace loraserve::formats
