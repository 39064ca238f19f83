#include "engine/stop_conditions.h"

#include <algorithm>

#include "engine/sequence.h"

namespace loraserve::engine {

FinishReason token_stop_reason(const Sequence& seq, int32_t token, std::span<const int32_t> eos_ids,
                               int64_t max_context) {
  const SamplingParams& p = seq.request.params;
  if (!p.ignore_eos && std::find(eos_ids.begin(), eos_ids.end(), token) != eos_ids.end())
    return FinishReason::kEos;
  if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end())
    return FinishReason::kStop;
  if (seq.num_generated() >= seq.max_tokens ||
      static_cast<int64_t>(seq.tokens.size()) >= max_context)
    return FinishReason::kLength;
  return FinishReason::kNone;
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const auto& stop : stops_) longest_ = std::max(longest_, stop.size());
}

StopStringMatcher::Match StopStringMatcher::find(std::string_view text, size_t old_size,
                                                 size_t min_start) const {
  // A stop string that ends past old_size begins at old_size - longest + 1 or later.
  const size_t from = std::max(old_size >= longest_ ? old_size - longest_ + 1 : 0, min_start);
  Match m;
  for (const auto& stop : stops_) {
    const size_t at = text.find(stop, from);
    if (at == std::string_view::npos) continue;
    if (at < m.begin || (at == m.begin && at + stop.size() > m.end)) m = {at, at + stop.size()};
  }
  return m;
}

size_t StopStringMatcher::pending_tail(std::string_view text) const {
  size_t tail = 0;
  for (const auto& stop : stops_) {
    for (size_t len = std::min(stop.size() - 1, text.size()); len > tail; --len) {
      if (text.substr(text.size() - len) == std::string_view(stop).substr(0, len)) {
        tail = len;
        break;
      }
    }
  }
  return tail;
}

}  // namespace loraserve::engine
