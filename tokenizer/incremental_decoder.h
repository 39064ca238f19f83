// IncrementalDecoder: streaming detokenization for one generated sequence. add() returns the text
// that became final with this token, never half a UTF-8 character (a trailing U+FFFD that more
// bytes could still complete is held back, and so is a trailing character the decoder's Strip
// may remove at the end); all add() results plus flush() concatenate to Tokenizer::decode of all
// the ids. (A decoder whose earlier text can still change, a multi-character Replace after Fuse,
// streams everything at flush().) Holds a reference to the Tokenizer, which must outlive it. Not
// thread-safe: one per sequence.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "tokenizer/tokenizer.h"

namespace loraserve::tokenizer {

class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);

  // The text made final by `id`; an id the vocabulary lacks -> INVALID_ARGUMENT naming it (the
  // decoder's state is then unchanged).
  Result<std::string> add(int32_t id);
  // The text still held back; the decoder is then ready for a new sequence. Errors only as
  // Tokenizer::decode does (a Replace pattern past PCRE2's limits).
  Result<std::string> flush();

 private:
  // Decodes the open run: the ids since the last point where the text before is final and
  // decoding the rest alone gives the same text as decoding everything.
  Result<std::string> decode_open_run(bool at_end) const;

  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> run_;  // the open run's ids
  bool run_at_start_ = true;  // the open run begins the sequence
  size_t emitted_ = 0;        // bytes of the open run's text already returned
};

}  // namespace loraserve::tokenizer
