// Stop conditions: why a sequence ends after its newest token.
//   token_stop_reason, in this order: an EOS id of the model (config.json ∪
//   generation_config.json) unless the request ignores EOS → kEos; one of its stop_token_ids →
//   kStop; max_tokens generated or the context full → kLength.
//   StopStringMatcher: the request's stop strings, matched on the streamed text. The text ends
//   right before the earliest stop string, which is never delivered, not even in part; with
//   include_stop_str_in_output (vLLM's), right after it.
// Pure functions and an immutable class; thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/request.h"

namespace loraserve::engine {

struct Sequence;

// kNone when the sequence goes on after `token` (already appended to seq.tokens).
FinishReason token_stop_reason(const Sequence& seq, int32_t token, std::span<const int32_t> eos_ids,
                               int64_t max_context);

// Finds stop strings in text that grows at its end.
class StopStringMatcher {
 public:
  StopStringMatcher() = default;
  // REQUIRES: no stop string is empty.
  explicit StopStringMatcher(std::vector<std::string> stops);

  // Where a stop string lies in the text: [begin, end).
  struct Match {
    size_t begin = std::string_view::npos;
    size_t end = std::string_view::npos;
    bool found() const { return begin != std::string_view::npos; }
  };

  bool empty() const { return stops_.empty(); }
  // The earliest stop string that ends past byte `old_size` of `text` and begins at or after
  // `min_start` (of two that begin there, the longer), or no match. (Text before `old_size` was
  // searched when it arrived.)
  Match find(std::string_view text, size_t old_size, size_t min_start = 0) const;
  // The length of the longest tail of `text` that begins some stop string: text that must wait
  // for what follows before it may be delivered.
  size_t pending_tail(std::string_view text) const;

 private:
  std::vector<std::string> stops_;
  size_t longest_ = 0;
};

}  // namespace loraserve::engine
