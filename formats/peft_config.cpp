#include "formats/peft_config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace loraserve::formats {
namespace {

using Json = nlohmann::ordered_json;  // keeps rank_pattern / alpha_pattern in file order

// A list of strings, or one string (a regex), or null.
Status parse_modules(const Json& j, const char* key, const std::string& source, std::vector<std::string>* list,
                     std::optional<std::string>* regex) {
  if (!j.contains(key) || j[key].is_null()) return ok_status();
  const Json& v = j[key];
  if (v.is_string()) {
    *regex = v.get<std::string>();
    return ok_status();
  }
  if (!v.is_array()) return invalid_argument_error("{}: '{}' must be a list of module names or a regex string", source, key);
  for (const Json& m : v) {
    if (!m.is_string()) return invalid_argument_error("{}: '{}' holds {}, not a module name", source, key, m.dump());
    list->push_back(m.get<std::string>());
  }
  return ok_status();
}

bool truthy(const Json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return false;
  const Json& v = j[key];
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_array() || v.is_object() || v.is_string()) return !v.empty();
  return true;
}

}  // namespace

namespace {

// Matches like Python's re.match (anchored at the start) or re.fullmatch (`full`); when
// `group1` is given it receives the first capture group of a match.
Result<bool> pcre2_match_impl(const std::string& pattern, const std::string& subject, bool full,
                              std::string* group1) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                   PCRE2_UTF | PCRE2_ANCHORED | (full ? PCRE2_ENDANCHORED : 0u), &err,
                                   &err_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    return invalid_argument_error("invalid regular expression '{}' at offset {}: {}", pattern, err_offset,
                                  reinterpret_cast<const char*>(msg));
  }
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.c_str()), subject.size(), 0, 0, md, nullptr);
  if (rc >= 2 && group1 != nullptr) {
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[2] != PCRE2_UNSET) *group1 = subject.substr(ov[2], ov[3] - ov[2]);
  }
  pcre2_match_data_free(md);
  pcre2_code_free(code);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) return invalid_argument_error("regular expression '{}' failed on '{}' (PCRE2 error {})", pattern, subject, rc);
  return true;
}

}  // namespace

Result<bool> regex_match(const std::string& pattern, const std::string& subject, bool full) {
  return pcre2_match_impl(pattern, subject, full, nullptr);
}

Result<PeftConfig> parse_peft_config(const std::string& text, const std::string& source) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return invalid_argument_error("{}: not a JSON object", source);
  PeftConfig c;
  const std::string peft_type = j.contains("peft_type") && j["peft_type"].is_string() ? j["peft_type"].get<std::string>() : "";
  if (peft_type != "LORA") {
    return invalid_argument_error("{}: peft_type '{}' is not supported (only LORA adapters are served)", source,
                                  peft_type.empty() ? "(missing)" : peft_type);
  }
  if (truthy(j, "use_dora")) return invalid_argument_error("{}: DoRA (use_dora) is not supported", source);
  if (truthy(j, "modules_to_save")) {
    return invalid_argument_error("{}: modules_to_save ({}) is not supported: those modules would replace base weights "
                                  "for this task only", source, j["modules_to_save"].dump());
  }
  if (j.contains("bias") && !j["bias"].is_null() && j["bias"] != "none") {
    return invalid_argument_error("{}: bias '{}' is not supported (only \"none\")", source, j["bias"].dump());
  }
  if (truthy(j, "lora_bias")) return invalid_argument_error("{}: lora_bias is not supported", source);
  if (truthy(j, "layer_replication")) return invalid_argument_error("{}: layer_replication is not supported", source);
  if (truthy(j, "trainable_token_indices")) {
    return invalid_argument_error("{}: trainable_token_indices is not supported", source);
  }
  if (truthy(j, "target_parameters")) return invalid_argument_error("{}: target_parameters is not supported", source);
  if (!j.contains("r") || !j["r"].is_number_integer()) return invalid_argument_error("{}: missing integer field 'r'", source);
  c.r = j["r"].get<int64_t>();
  if (c.r <= 0) return invalid_argument_error("{}: r must be positive, got {}", source, c.r);
  c.lora_alpha = static_cast<double>(c.r);
  if (j.contains("lora_alpha") && !j["lora_alpha"].is_null()) {
    if (!j["lora_alpha"].is_number()) return invalid_argument_error("{}: lora_alpha must be a number", source);
    c.lora_alpha = j["lora_alpha"].get<double>();
  }
  if (!std::isfinite(c.lora_alpha)) return invalid_argument_error("{}: lora_alpha must be finite", source);
  if (j.contains("use_rslora") && j["use_rslora"].is_boolean()) c.use_rslora = j["use_rslora"].get<bool>();
  LS_RETURN_IF_ERROR(parse_modules(j, "target_modules", source, &c.target_modules, &c.target_modules_regex));
  if (c.target_modules.empty() && !c.target_modules_regex) {
    return invalid_argument_error("{}: target_modules is missing or empty", source);
  }
  LS_RETURN_IF_ERROR(parse_modules(j, "exclude_modules", source, &c.exclude_modules, &c.exclude_modules_regex));
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_object()) return invalid_argument_error("{}: '{}' must be an object", source, key);
    for (auto it = j[key].begin(); it != j[key].end(); ++it) {
      if (std::string(key) == "rank_pattern") {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() <= 0) {
          return invalid_argument_error("{}: rank_pattern['{}'] must be a positive integer", source, it.key());
        }
        c.rank_pattern.emplace_back(it.key(), it.value().get<int64_t>());
      } else {
        if (!it.value().is_number()) return invalid_argument_error("{}: alpha_pattern['{}'] must be a number", source, it.key());
        c.alpha_pattern.emplace_back(it.key(), it.value().get<double>());
      }
    }
  }
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
    const Json& v = j["layers_to_transform"];
    std::vector<int64_t> layers;
    if (v.is_number_integer()) {
      layers.push_back(v.get<int64_t>());
    } else if (v.is_array()) {
      for (const Json& l : v) {
        if (!l.is_number_integer() || l.get<int64_t>() < 0) {
          return invalid_argument_error("{}: layers_to_transform holds {}, not a layer index", source, l.dump());
        }
        layers.push_back(l.get<int64_t>());
      }
    } else {
      return invalid_argument_error("{}: layers_to_transform must be a layer index or a list of them", source);
    }
    if (!layers.empty()) c.layers_to_transform = layers;
  }
  if (j.contains("layers_pattern") && !j["layers_pattern"].is_null()) {
    const Json& v = j["layers_pattern"];
    if (v.is_string()) {
      c.layers_pattern.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      for (const Json& p : v) {
        if (p.is_string()) c.layers_pattern.push_back(p.get<std::string>());
      }
    }
  }
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()) {
    c.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
  }
  return c;
}

Result<PeftConfig> load_peft_config(const std::string& dir) {
  const auto path = std::filesystem::path(dir) / "adapter_config.json";
  std::ifstream in(path);
  if (!in) return not_found_error("{}: cannot open (an adapter folder needs adapter_config.json)", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_peft_config(ss.str(), path.string());
}

Result<bool> peft_targets(const PeftConfig& c, const std::string& key) {
  // exclude_modules first, as PEFT does.
  if (c.exclude_modules_regex) {
    LS_ASSIGN_OR_RETURN(bool excluded, regex_match(*c.exclude_modules_regex, key, true));
    if (excluded) return false;
  }
  for (const auto& m : c.exclude_modules) {
    if (key == m || (key.size() > m.size() && key.ends_with("." + m))) return false;
  }
  if (c.target_modules_regex) return regex_match(*c.target_modules_regex, key, true);
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
  std::vector<std::string> patterns;
  if (c.layers_pattern.empty()) {
    patterns.push_back(R"(.*\.[^.]*\.(\d+)\.)");
  } else {
    for (const auto& p : c.layers_pattern) patterns.push_back(".*\\." + p + R"(\.(\d+)\.)");
  }
  for (const auto& re : patterns) {
    std::string digits;
    LS_ASSIGN_OR_RETURN(bool m, pcre2_match_impl(re, key, false, &digits));
    if (m && !digits.empty()) {
      index = std::stoll(digits);
      break;
    }
  }
  if (!index) return false;
  const auto& l = *c.layers_to_transform;
  return std::find(l.begin(), l.end(), *index) != l.end();
}

Result<std::pair<int64_t, double>> peft_rank_and_alpha(const PeftConfig& c, const std::string& key) {
  int64_t r = c.r;
  double alpha = c.lora_alpha;
  for (const auto& [pattern, value] : c.rank_pattern) {
    LS_ASSIGN_OR_RETURN(bool m, regex_match("(.*\\.)?(" + pattern + ")$", key, false));
    if (m) {
      r = value;
      break;
    }
  }
  for (const auto& [pattern, value] : c.alpha_pattern) {
    LS_ASSIGN_OR_RETURN(bool m, regex_match("(.*\\.)?(" + pattern + ")$", key, false));
    if (m) {
      alpha = value;
      break;
    }
  }
  return std::make_pair(r, alpha);
}

double peft_scale(const PeftConfig& c, int64_t rank, double alpha) {
  return c.use_rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank);
}

}  // namespace loraserve::formats
