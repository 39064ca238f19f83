// Pre-tokenizers: split normalized text into the words the model encodes one by one (Split with
// the model's regex, ByteLevel, Digits, Metaspace, Sequence), with the Hugging Face semantics of
// each split behavior. Immutable after construction; thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "tokenizer/json_fields.h"

namespace loraserve::tokenizer {

// A piece of input on its way to the model. `at_start`: it begins at offset 0 of the original
// text (Metaspace's prepend_scheme "first" prepends only there).
struct Piece {
  std::string text;
  bool at_start = false;
};

// Receives the words a pre-tokenizer makes, one at a time, in order.
using PieceSink = std::function<Status(Piece&& word)>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits or rewrites `piece`, passing every non-empty result to `sink` as soon as it is made
  // (no list of the words of a long text is ever built). Stops at the first error of `sink`.
  // REQUIRES: piece.text is valid UTF-8.
  virtual Status pre_tokenize(Piece piece, const PieceSink& sink) const = 0;
};

// Builds the pre-tokenizer `config` describes; `path` names it in errors. Null: nullptr.
Result<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const json& config,
                                                         const std::string& path);

// Metaspace's settings, read alike by the pre-tokenizer and the decoder: the replacement
// character and when a word gets it prepended ("add_prefix_space": false is the older spelling of
// "prepend_scheme": "never"). An unknown scheme is an error naming the field.
enum class PrependScheme { kAlways, kFirst, kNever };
struct MetaspaceSettings {
  std::string replacement_utf8;
  PrependScheme scheme = PrependScheme::kAlways;
};
Result<MetaspaceSettings> parse_metaspace(const json& config, const std::string& path);

}  // namespace loraserve::tokenizer
