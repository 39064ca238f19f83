#include "formats/peft_config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/excerpt.h"
#include "common/untrusted_json.h"

namespace loraserve::formats {
namespace {

using Json = nlohmann::ordered_json;  // keeps rank_pattern / alpha_pattern in file order

// Steps one match may take (about a millisecond). Module keys are short, and the patterns PEFT
// writes match them in under 200 steps; a pattern that needs 50 times more is backtracking
// without end.
constexpr uint32_t kMatchLimit = 10000;
constexpr uint32_t kDepthLimit = 1000;

Status check_entries(const Json& v, const char* key, const std::string& source) {
  if ((v.is_array() || v.is_object()) && v.size() > kMaxPeftEntries) {
    return invalid_argument_error("{}: '{}' has {} entries; at most {} are accepted", source, key,
                                  v.size(), kMaxPeftEntries);
  }
  return ok_status();
}

// PatternRegex::compile with errors that name the file too.
Result<PatternRegex> compile_field(const std::string& pattern, bool full, const std::string& field,
                                   const std::string& source) {
  auto regex = PatternRegex::compile(pattern, full, field);
  if (!regex.ok()) return regex.status().with_context(source);
  return regex;
}

// A list of strings, or one string (a regex that must match the whole key), or null.
Status parse_modules(const Json& j, const char* key, const std::string& source,
                     std::vector<std::string>* list, std::optional<PatternRegex>* regex) {
  if (!has_field(j, key)) return ok_status();
  const Json& v = j[key];
  if (v.is_string()) {
    std::string text = v.get<std::string>();
    std::string lowered = text;
    std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (lowered == "all-linear") {  // PEFT's shorthand (a string, any case), not a regex
      list->push_back("all-linear");
      return ok_status();
    }
    LS_ASSIGN_OR_RETURN(*regex, compile_field(text, /*full=*/true, key, source));
    return ok_status();
  }
  if (!v.is_array()) {
    return invalid_argument_error(
        "{}: '{}' must be a list of module names or a regex string, got {}", source, key,
        json_excerpt(v));
  }
  LS_RETURN_IF_ERROR(check_entries(v, key, source));
  for (const Json& m : v) {
    if (!m.is_string()) {
      return invalid_argument_error("{}: '{}' holds {}, not a module name", source, key,
                                    json_excerpt(m));
    }
    list->push_back(m.get<std::string>());
  }
  return ok_status();
}

bool truthy(const Json& j, const char* key) {
  if (!has_field(j, key)) return false;
  const Json& v = j[key];
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_array() || v.is_object() || v.is_string()) return !v.empty();
  return true;
}

// get_pattern_key's form of a rank_pattern / alpha_pattern key.
Result<PatternRegex> key_pattern(const std::string& pattern, const std::string& field,
                                 const std::string& source) {
  return compile_field("(.*\\.)?(" + pattern + ")$", /*full=*/false, field, source);
}

Status parse_patterns(const Json& j, const std::string& source, PeftConfig* c) {
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (!has_field(j, key)) continue;
    const Json& map = j[key];
    if (!map.is_object()) {
      return invalid_argument_error("{}: '{}' must be an object, got {}", source, key,
                                    json_excerpt(map));
    }
    LS_RETURN_IF_ERROR(check_entries(map, key, source));
    const bool rank = std::string_view(key) == "rank_pattern";
    for (auto it = map.begin(); it != map.end(); ++it) {
      const std::string field = fmt::format("{}[{}]", key, excerpt(it.key()));
      LS_ASSIGN_OR_RETURN(PatternRegex regex, key_pattern(it.key(), field, source));
      if (rank) {
        const auto r = json_int_in_range(it.value(), 1, INT32_MAX);
        if (!r) {
          return invalid_argument_error("{}: {} must be a rank in [1, {}], got {}", source, field,
                                        INT32_MAX, json_excerpt(it.value()));
        }
        c->rank_pattern.push_back({it.key(), std::move(regex), *r});
      } else {
        if (!it.value().is_number() || !std::isfinite(it.value().get<double>())) {
          return invalid_argument_error("{}: {} must be a finite number, got {}", source, field,
                                        json_excerpt(it.value()));
        }
        c->alpha_pattern.push_back({it.key(), std::move(regex), it.value().get<double>()});
      }
    }
  }
  return ok_status();
}

Status parse_layers(const Json& j, const std::string& source, PeftConfig* c) {
  if (has_field(j, "layers_to_transform")) {
    const Json& v = j["layers_to_transform"];
    LS_RETURN_IF_ERROR(check_entries(v, "layers_to_transform", source));
    std::vector<int64_t> layers;
    for (const Json& l : v.is_array() ? v : Json::array({v})) {
      const auto index = json_int_in_range(l, 0, INT32_MAX);
      if (!index) {
        return invalid_argument_error(
            "{}: layers_to_transform must be a layer index or a list of them, got {}", source,
            json_excerpt(l));
      }
      layers.push_back(*index);
    }
    if (!layers.empty()) c->layers_to_transform = layers;
  }
  std::vector<std::string> patterns;
  if (has_field(j, "layers_pattern")) {
    const Json& v = j["layers_pattern"];
    LS_RETURN_IF_ERROR(check_entries(v, "layers_pattern", source));
    for (const Json& p : v.is_array() ? v : Json::array({v})) {
      if (!p.is_string()) {
        return invalid_argument_error(
            "{}: layers_pattern must be a string or a list of them, got {}", source,
            json_excerpt(p));
      }
      patterns.push_back(".*\\." + p.get<std::string>() + R"(\.(\d+)\.)");
    }
  }
  // PEFT's default when no layers_pattern is given.
  if (patterns.empty()) patterns.push_back(R"(.*\.[^.]*\.(\d+)\.)");
  for (const std::string& p : patterns) {
    LS_ASSIGN_OR_RETURN(PatternRegex regex,
                        compile_field(p, /*full=*/false, "layers_pattern", source));
    c->layer_index_patterns.push_back(std::move(regex));
  }
  return ok_status();
}

}  // namespace

struct PatternRegex::Code {
  pcre2_code* code = nullptr;
  pcre2_match_context* context = nullptr;
  ~Code() {
    pcre2_match_context_free(context);
    pcre2_code_free(code);
  }
};

Result<PatternRegex> PatternRegex::compile(const std::string& pattern, bool full,
                                           const std::string& field) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  auto code = std::make_shared<Code>();
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_ANCHORED | (full ? PCRE2_ENDANCHORED : 0u), &err,
                             &err_offset, nullptr);
  if (code->code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    return invalid_argument_error("{}: invalid regular expression {} at offset {}: {}", field,
                                  excerpt(pattern), err_offset, reinterpret_cast<const char*>(msg));
  }
  code->context = pcre2_match_context_create(nullptr);
  if (code->context == nullptr) return internal_error("{}: out of memory for a regex", field);
  pcre2_set_match_limit(code->context, kMatchLimit);
  pcre2_set_depth_limit(code->context, kDepthLimit);
  PatternRegex r;
  r.pattern_ = pattern;
  r.field_ = field;
  r.code_ = std::move(code);
  return r;
}

Result<bool> PatternRegex::match(std::string_view subject, std::string* group1) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  if (md == nullptr) return internal_error("{}: out of memory for a regex match", field_);
  const int rc = pcre2_match(code_->code, reinterpret_cast<PCRE2_SPTR>(subject.data()),
                             subject.size(), 0, 0, md, code_->context);
  if (rc >= 2 && group1 != nullptr) {
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[2] != PCRE2_UNSET) *group1 = std::string(subject.substr(ov[2], ov[3] - ov[2]));
  }
  pcre2_match_data_free(md);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof(msg));
    return invalid_argument_error("{}: regular expression {} failed on {}: {}", field_,
                                  excerpt(pattern_), excerpt(subject),
                                  reinterpret_cast<const char*>(msg));
  }
  return true;
}

Result<PeftConfig> parse_peft_config(const std::string& text, const std::string& source) {
  LS_ASSIGN_OR_RETURN(const Json j, parse_untrusted_json<Json>(text, source));
  if (!j.is_object()) {
    return invalid_argument_error("{}: not a JSON object (got {})", source, json_excerpt(j));
  }
  PeftConfig c;
  if (!has_field(j, "peft_type") || !j["peft_type"].is_string()) {
    return invalid_argument_error(
        "{}: peft_type is missing or not a string (only LORA adapters are served)", source);
  }
  const std::string peft_type = j["peft_type"].get<std::string>();
  if (peft_type != "LORA") {
    return invalid_argument_error(
        "{}: peft_type {} is not supported (only LORA adapters are served)", source,
        excerpt(peft_type));
  }
  if (truthy(j, "use_dora"))
    return invalid_argument_error("{}: DoRA (use_dora) is not supported", source);
  // Activated LoRA applies its weights only after the invocation tokens appear: served as plain
  // LoRA it would change every token.
  if (truthy(j, "alora_invocation_tokens")) {
    return invalid_argument_error("{}: activated LoRA (alora_invocation_tokens) is not supported",
                                  source);
  }
  if (truthy(j, "modules_to_save")) {
    return invalid_argument_error(
        "{}: modules_to_save ({}) is not supported: those modules would replace base weights "
        "for this task only",
        source, json_excerpt(j["modules_to_save"]));
  }
  if (has_field(j, "bias") && j["bias"] != "none") {
    return invalid_argument_error("{}: bias {} is not supported (only \"none\")", source,
                                  json_excerpt(j["bias"]));
  }
  if (truthy(j, "lora_bias"))
    return invalid_argument_error("{}: lora_bias is not supported", source);
  if (truthy(j, "layer_replication"))
    return invalid_argument_error("{}: layer_replication is not supported", source);
  if (truthy(j, "trainable_token_indices"))
    return invalid_argument_error("{}: trainable_token_indices is not supported", source);
  if (truthy(j, "target_parameters"))
    return invalid_argument_error("{}: target_parameters is not supported", source);
  if (!has_field(j, "r")) return invalid_argument_error("{}: missing integer field 'r'", source);
  const auto r = json_int_in_range(j["r"], 1, INT32_MAX);
  if (!r) {
    return invalid_argument_error("{}: r must be positive, an integer in [1, {}], got {}", source,
                                  INT32_MAX, json_excerpt(j["r"]));
  }
  c.r = *r;
  c.lora_alpha = static_cast<double>(c.r);
  if (has_field(j, "lora_alpha")) {
    const Json& a = j["lora_alpha"];
    if (!a.is_number() || !std::isfinite(a.get<double>())) {
      return invalid_argument_error("{}: lora_alpha must be a finite number, got {}", source,
                                    json_excerpt(a));
    }
    c.lora_alpha = a.get<double>();
  }
  if (has_field(j, "use_rslora")) {
    if (!j["use_rslora"].is_boolean()) {
      return invalid_argument_error("{}: use_rslora must be true or false, got {}", source,
                                    json_excerpt(j["use_rslora"]));
    }
    c.use_rslora = j["use_rslora"].get<bool>();
  }
  LS_RETURN_IF_ERROR(
      parse_modules(j, "target_modules", source, &c.target_modules, &c.target_modules_regex));
  if (c.target_modules.empty() && !c.target_modules_regex) {
    return invalid_argument_error("{}: target_modules is missing or empty", source);
  }
  LS_RETURN_IF_ERROR(
      parse_modules(j, "exclude_modules", source, &c.exclude_modules, &c.exclude_modules_regex));
  LS_RETURN_IF_ERROR(parse_patterns(j, source, &c));
  LS_RETURN_IF_ERROR(parse_layers(j, source, &c));
  if (has_field(j, "base_model_name_or_path") && j["base_model_name_or_path"].is_string())
    c.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
  return c;
}

Result<PeftConfig> load_peft_config(const Folder& dir) {
  auto file = dir.open_file("adapter_config.json");
  if (!file.ok()) {
    if (file.status().code() == StatusCode::kNotFound) {
      return not_found_error("{}: missing (an adapter folder needs adapter_config.json)",
                             dir.file_name("adapter_config.json"));
    }
    return file.status();
  }
  const ConfigFileCap cap = config_file_cap();
  LS_ASSIGN_OR_RETURN(const std::string text, file->read_all(cap.bytes, cap.flag));
  return parse_peft_config(text, file->name());
}

Result<bool> peft_targets(const PeftConfig& c, const std::string& key) {
  // exclude_modules first, as PEFT does.
  if (c.exclude_modules_regex) {
    LS_ASSIGN_OR_RETURN(bool excluded, c.exclude_modules_regex->match(key));
    if (excluded) return false;
  }
  for (const auto& m : c.exclude_modules) {
    if (key == m || (key.size() > m.size() && key.ends_with("." + m))) return false;
  }
  if (c.target_modules_regex) return c.target_modules_regex->match(key);
  bool found = false;
  for (const auto& m : c.target_modules) {
    if (m == "all-linear") {
      found = key.find(".layers.") != std::string::npos;  // every projection; never lm_head
    } else if (key == m || (key.size() > m.size() && key.ends_with("." + m))) {
      found = true;
    }
    if (found) break;
  }
  if (!found || !c.layers_to_transform) return found;
  // Layer index from the key, as PEFT's check_target_module_exists extracts it.
  std::optional<int64_t> index;
  for (const PatternRegex& re : c.layer_index_patterns) {
    std::string digits;
    LS_ASSIGN_OR_RETURN(bool m, re.match(key, &digits));
    if (m && !digits.empty()) {
      if (digits.size() > 9) return false;  // no layer of any model has such an index
      index = std::stoll(digits);
      break;
    }
  }
  if (!index) return false;
  const auto& l = *c.layers_to_transform;
  return std::find(l.begin(), l.end(), *index) != l.end();
}

Result<std::pair<int64_t, double>> peft_rank_and_alpha(const PeftConfig& c,
                                                       const std::string& key) {
  int64_t r = c.r;
  double alpha = c.lora_alpha;
  for (const auto& p : c.rank_pattern) {
    LS_ASSIGN_OR_RETURN(bool m, p.regex.match(key));
    if (m) {
      r = p.value;
      break;
    }
  }
  for (const auto& p : c.alpha_pattern) {
    LS_ASSIGN_OR_RETURN(bool m, p.regex.match(key));
    if (m) {
      alpha = p.value;
      break;
    }
  }
  return std::make_pair(r, alpha);
}

double peft_scale(const PeftConfig& c, int64_t rank, double alpha) {
  return c.use_rslora ? alpha / std::sqrt(static_cast<double>(rank))
                      : alpha / static_cast<double>(rank);
}

}  // namespace loraserve::formats
