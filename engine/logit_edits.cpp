#include "engine/logit_edits.h"

#include <algorithm>
#include <cmath>

namespace loraserve::engine {
namespace {

bool asks_penalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

}  // namespace

LogitEdits::LogitEdits(const SamplingParams& p)
    : repetition_(p.repetition_penalty),
      frequency_(p.frequency_penalty),
      presence_(p.presence_penalty),
      min_tokens_(p.min_tokens),
      track_output_(asks_penalties(p)) {}

std::unique_ptr<LogitEdits> LogitEdits::make(const SamplingParams& p,
                                             std::span<const int32_t> prompt,
                                             std::span<const int32_t> eos_ids) {
  // Most requests ask for none: nothing is allocated for them (this runs on the engine thread).
  if (p.min_tokens == 0 && p.logit_bias.empty() && !asks_penalties(p)) return nullptr;
  std::unique_ptr<LogitEdits> e(new LogitEdits(p));
  if (p.min_tokens > 0) {
    std::vector<int32_t> masked(p.stop_token_ids.begin(), p.stop_token_ids.end());
    if (!p.ignore_eos) masked.insert(masked.end(), eos_ids.begin(), eos_ids.end());
    std::sort(masked.begin(), masked.end());
    masked.erase(std::unique(masked.begin(), masked.end()), masked.end());
    for (int32_t id : masked) e->edits_.push_back({id, -INFINITY, 1.0f, 0.0f});
    e->num_masks_ = e->edits_.size();
  }
  for (const auto& [token, bias] : p.logit_bias) e->entry(token).bias = bias;
  if (p.repetition_penalty != 1.0f) {
    for (int32_t token : prompt) e->entry(token).penalty = p.repetition_penalty;
  }
  if (e->edits_.empty() && !e->track_output_) return nullptr;  // min_tokens with nothing to mask
  return e;
}

kernels::LogitEdit& LogitEdits::entry(int32_t token) {
  auto [it, added] = index_.try_emplace(token, edits_.size());
  if (added) edits_.push_back({token, 0.0f, 1.0f, 0.0f});
  return edits_[it->second];
}

void LogitEdits::add_output_token(int32_t token) {
  if (!track_output_) return;
  const int32_t n = ++count_[token];
  kernels::LogitEdit& e = entry(token);
  e.penalty = repetition_;
  e.subtract = frequency_ * static_cast<float>(n) + presence_;
}

std::span<const kernels::LogitEdit> LogitEdits::edits(int32_t num_generated) const {
  std::span<const kernels::LogitEdit> all(edits_);
  return num_generated < min_tokens_ ? all : all.subspan(num_masks_);
}

}  // namespace loraserve::engine
