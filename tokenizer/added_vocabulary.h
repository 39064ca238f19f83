// Added tokens (tokenizer.json's "added_tokens"): found in the input before anything else,
// leftmost-longest, with their single_word, lstrip and rstrip rules. Tokens with normalized=false
// are matched in the raw text, the others in the normalized text (their content normalized the
// same way). Immutable after construction; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/normalizer.h"

namespace loraserve::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// A stretch [begin, end) of a text: an added token (token >= 0) or text for the model (-1).
struct TextSpan {
  size_t begin = 0;
  size_t end = 0;
  int32_t token = -1;
};

// Leftmost-longest search for a set of strings (a byte trie).
class TokenMatcher {
 public:
  void add(std::string_view content, int32_t token_index);
  bool empty() const { return nodes_.size() <= 1; }
  // The longest string that starts at text[pos]: its token index, and its length in *length.
  // -1 when none does.
  int32_t longest_at(std::string_view text, size_t pos, size_t* length) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
    int32_t token_index = -1;
  };
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_byte_{};
};

class AddedVocabulary {
 public:
  // `list` is tokenizer.json's "added_tokens"; normalized tokens are normalized by `normalizer`
  // (may be null) for matching.
  static Result<AddedVocabulary> from_json(const json& list, const Normalizer* normalizer,
                                           const std::string& path);

  // Cuts `text` at the added tokens `normalized_text` selects (false: the raw-text tokens).
  // REQUIRES: text is valid UTF-8.
  std::vector<TextSpan> split(std::string_view text, bool normalized_text) const;

  const AddedToken* find(int32_t id) const;
  const AddedToken* find(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  TokenIdMap by_content_;  // content -> index in tokens_
  TokenMatcher raw_;
  TokenMatcher normalized_;
};

}  // namespace loraserve::tokenizer
