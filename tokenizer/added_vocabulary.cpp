#include "tokenizer/added_vocabulary.h"

#include <utf8proc.h>

#include <algorithm>

#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

// Rust regex's \w: letters, marks, decimal and letter numbers, connector punctuation, joiners.
bool is_word_char(char32_t cp) {
  if (cp == 0x200C || cp == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// Start of the character that ends at `end` (exclusive). REQUIRES: end > 0, valid UTF-8.
size_t previous_char_start(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return start;
}

char32_t char_at(std::string_view text, size_t pos) { return next_code_point(text, &pos); }

}  // namespace

void TokenMatcher::add(std::string_view content, int32_t token_index) {
  int32_t node = 0;
  for (char c : content) {
    const auto byte = static_cast<uint8_t>(c);
    auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const auto& child, uint8_t b) { return child.first < b; });
    if (it != children.end() && it->first == byte) {
      node = it->second;
      continue;
    }
    const auto next = static_cast<int32_t>(nodes_.size());
    children.insert(it, {byte, next});
    nodes_.emplace_back();
    node = next;
  }
  if (nodes_[node].token_index < 0) nodes_[node].token_index = token_index;
  first_byte_[static_cast<uint8_t>(content[0])] = true;
}

int32_t TokenMatcher::longest_at(std::string_view text, size_t pos, size_t* length) const {
  if (!first_byte_[static_cast<uint8_t>(text[pos])]) return -1;
  int32_t node = 0, found = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    const auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const auto& child, uint8_t b) { return child.first < b; });
    if (it == children.end() || it->first != byte) break;
    node = it->second;
    if (nodes_[node].token_index >= 0) {
      found = nodes_[node].token_index;
      *length = i + 1 - pos;
    }
  }
  return found;
}

Result<AddedVocabulary> AddedVocabulary::from_json(const json& list, const Normalizer* normalizer,
                                                   const std::string& path) {
  AddedVocabulary vocab;
  if (list.is_null()) return vocab;
  if (!list.is_array()) {
    return invalid_argument_error("{}: expected a list of added tokens, got {}", path, shown(list));
  }
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = element_path(path, i);
    const json& entry = list[i];
    LS_RETURN_IF_ERROR(expect_object(entry, at));
    AddedToken token;
    LS_ASSIGN_OR_RETURN(token.content, string_field(entry, "content", at));
    if (token.content.empty()) return invalid_argument_error("{}.content: empty", at);
    if (auto bad = find_invalid_utf8(token.content)) {
      return invalid_argument_error("{}.content: not valid UTF-8 (byte {})", at, *bad);
    }
    const json* id = find_field(entry, "id");
    if (id == nullptr) return invalid_argument_error("{}.id: missing", at);
    LS_ASSIGN_OR_RETURN(token.id, token_id_value(*id, at + ".id"));
    LS_ASSIGN_OR_RETURN(token.special, bool_field(entry, "special", false, at));
    LS_ASSIGN_OR_RETURN(token.single_word, bool_field(entry, "single_word", false, at));
    LS_ASSIGN_OR_RETURN(token.lstrip, bool_field(entry, "lstrip", false, at));
    LS_ASSIGN_OR_RETURN(token.rstrip, bool_field(entry, "rstrip", false, at));
    LS_ASSIGN_OR_RETURN(token.normalized, bool_field(entry, "normalized", !token.special, at));
    if (vocab.by_content_.count(token.content) > 0) continue;  // a repeat adds nothing
    const auto index = static_cast<int32_t>(vocab.tokens_.size());
    vocab.by_content_.emplace(token.content, index);
    vocab.by_id_.emplace(token.id, static_cast<size_t>(index));
    if (token.normalized && normalizer != nullptr) {
      LS_ASSIGN_OR_RETURN(std::string normalized, normalizer->normalize(token.content));
      if (!normalized.empty()) vocab.normalized_.add(normalized, index);
    } else if (token.normalized) {
      vocab.normalized_.add(token.content, index);
    } else {
      vocab.raw_.add(token.content, index);
    }
    vocab.tokens_.push_back(std::move(token));
  }
  return vocab;
}

std::vector<TextSpan> AddedVocabulary::split(std::string_view text, bool normalized_text) const {
  const TokenMatcher& matcher = normalized_text ? normalized_ : raw_;
  std::vector<TextSpan> spans;
  if (matcher.empty()) {
    spans.push_back({0, text.size(), -1});
    return spans;
  }
  size_t start_offset = 0, pos = 0;
  while (pos < text.size()) {
    size_t length = 0;
    const int32_t index = matcher.longest_at(text, pos, &length);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t begin = pos, end = pos + length;
    if (token.single_word) {
      const bool word_before =
          begin > 0 && is_word_char(char_at(text, previous_char_start(text, begin)));
      const bool word_after = end < text.size() && is_word_char(char_at(text, end));
      if (word_before || word_after) {
        pos = end;  // as Hugging Face: the search resumes after the rejected match
        continue;
      }
    }
    if (token.lstrip) {
      while (begin > start_offset) {
        const size_t prev = previous_char_start(text, begin);
        if (!is_unicode_whitespace(char_at(text, prev))) break;
        begin = prev;
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t next = end;
        if (!is_unicode_whitespace(next_code_point(text, &next))) break;
        end = next;
      }
    }
    if (start_offset < begin) spans.push_back({start_offset, begin, -1});
    spans.push_back({begin, end, token.id});
    start_offset = pos = end;
  }
  if (start_offset < text.size()) spans.push_back({start_offset, text.size(), -1});
  return spans;
}

const AddedToken* AddedVocabulary::find(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::find(std::string_view content) const {
  auto it = by_content_.find(content);
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

}  // namespace loraserve::tokenizer
