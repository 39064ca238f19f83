// A compiled PCRE2 pattern (JIT when available) for the Split pre-tokenizer and the Replace
// normalizer/decoder. tokenizer.json patterns are written for Oniguruma; where engines disagree
// the pinned reference (@lenml/tokenizers, JavaScript regexes with the "u" flag) decides:
// \s and \S are JavaScript's white space, \d and \w are ASCII, and the contraction group
// (?i:'s|'t|...) matches ASCII case variants only. Immutable after construction; matching is
// thread-safe (match data is per call).
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace loraserve::tokenizer {

struct Match {
  size_t begin = 0;
  size_t end = 0;
};

class Regex {
 public:
  // `pattern` as tokenizer.json writes it; `where` names the field for error messages.
  static Result<std::unique_ptr<Regex>> compile(std::string_view pattern, const std::string& where);
  // A pattern matching `literal` exactly.
  static Result<std::unique_ptr<Regex>> literal(std::string_view literal, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every non-empty, non-overlapping match in `text`, left to right.
  // REQUIRES: text is valid UTF-8.
  Result<std::vector<Match>> find_all(std::string_view text) const;

  // `text` with every match replaced by `replacement` (taken literally).
  Result<std::string> replace_all(std::string_view text, std::string_view replacement) const;

 private:
  Regex(void* code, std::string pattern) : code_(code), pattern_(std::move(pattern)) {}
  static Result<std::unique_ptr<Regex>> build(const std::string& pcre_pattern, uint32_t options,
                                              std::string shown, const std::string& where);

  void* code_;  // pcre2_code_8*, owned
  std::string pattern_;
};

// The pattern of a Replace or Split step: {"String": "..."} (literal) or {"Regex": "..."}.
Result<std::unique_ptr<Regex>> make_pattern(const nlohmann::json& config, const std::string& path);

// The PCRE2 spelling of a tokenizer.json (Oniguruma/JavaScript) pattern; exposed for tests.
Result<std::string> translate_pattern(std::string_view pattern);

}  // namespace loraserve::tokenizer
