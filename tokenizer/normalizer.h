// Normalizers: the text transforms tokenizer.json's "normalizer" applies to every piece of input
// between added tokens (NFC/NFD/NFKC/NFKD through utf8proc, Replace, Prepend, Strip, Lowercase
// and Sequence). Immutable after construction; thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "tokenizer/json_fields.h"

namespace loraserve::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // REQUIRES: text is valid UTF-8. The result is valid UTF-8.
  virtual Result<std::string> normalize(std::string_view text) const = 0;
};

// Builds the normalizer that `config` describes; `path` names it in errors ("normalizer").
// A null config is no normalizer (nullptr).
Result<std::unique_ptr<Normalizer>> make_normalizer(const json& config, const std::string& path);

}  // namespace loraserve::tokenizer
