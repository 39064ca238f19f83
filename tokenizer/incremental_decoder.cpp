#include "tokenizer/incremental_decoder.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

// Length of `text` without its trailing U+FFFDs and trailing `strip` characters.
size_t final_prefix_length(std::string_view text, std::optional<char32_t> strip) {
  std::string strip_utf8;
  if (strip) append_utf8(*strip, &strip_utf8);
  size_t end = text.size();
  while (end > 0) {
    const std::string_view head = text.substr(0, end);
    if (head.ends_with(kReplacementUtf8)) {
      end -= kReplacementUtf8.size();
    } else if (!strip_utf8.empty() && head.ends_with(strip_utf8)) {
      end -= strip_utf8.size();
    } else {
      break;
    }
  }
  return end;
}

}  // namespace

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

Result<std::string> IncrementalDecoder::decode_open_run(bool at_end) const {
  return tokenizer_.decode_run(run_, skip_special_tokens_, run_at_start_, at_end);
}

Result<std::string> IncrementalDecoder::add(int32_t id) {
  LS_RETURN_IF_ERROR(tokenizer_.check_ids({&id, 1}));
  if (skip_special_tokens_ && tokenizer_.is_special(id)) return std::string();
  if (!tokenizer_.id_to_token(id).has_value()) return std::string();  // no token: no text
  run_.push_back(id);
  auto text = decode_open_run(/*at_end=*/false);
  if (!text.ok()) {
    run_.pop_back();
    return text.status();
  }
  const Decoder& decoder = *tokenizer_.decoder_;
  const size_t final_length = final_prefix_length(*text, decoder.end_strip_char());
  size_t limit = decoder.prefix_stable() ? final_length : 0;
  const bool joins_next =
      decoder.has_byte_fallback() && Decoder::is_byte_token(*tokenizer_.id_to_token(id));
  if (joins_next) {
    // ByteFallback turns a whole ill-formed run of <0xXX> tokens into U+FFFDs, so the text of a
    // trailing run is final only once a token that is not a byte ends it.
    size_t keep = run_.size();
    while (keep > 0 && Decoder::is_byte_token(*tokenizer_.id_to_token(run_[keep - 1]))) --keep;
    auto before = tokenizer_.decode_run(std::span<const int32_t>(run_.data(), keep),
                                        skip_special_tokens_, run_at_start_, /*at_end=*/false);
    if (!before.ok()) {
      run_.pop_back();
      return before.status();
    }
    limit = std::min(limit, final_prefix_length(*before, decoder.end_strip_char()));
  }
  std::string out;
  if (limit > emitted_) {
    out = text->substr(emitted_, limit - emitted_);
    emitted_ = limit;
  }
  // The run can be closed when all its text is final and what follows cannot change it: no
  // byte token that a next one could join, and the start-of-text rules are settled.
  if (decoder.runs_compose() && final_length == text->size() && !joins_next &&
      !(run_at_start_ && text->empty())) {
    run_.clear();
    run_at_start_ = false;
    emitted_ = 0;
  }
  return out;
}

Result<std::string> IncrementalDecoder::flush() {
  LS_ASSIGN_OR_RETURN(std::string text, decode_open_run(/*at_end=*/true));
  std::string out = text.size() > emitted_ ? text.substr(emitted_) : std::string();
  run_.clear();
  run_at_start_ = true;
  emitted_ = 0;
  return out;
}

}  // namespace loraserve::tokenizer
