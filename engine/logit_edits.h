// A request's logit_bias, min_tokens and penalties as the sparse edits the backend applies to
// the logits its next token is picked from (kernels::LogitEdit), kept up to date as the output
// grows: one entry per token that has a bias, is in the prompt (repetition penalty) or in the
// output (all three penalties), after the min_tokens masks. Engine thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/request.h"
#include "kernels/backend.h"

namespace loraserve::engine {

class LogitEdits {
 public:
  // Null when `p` asks for none of them. `eos_ids`: the model's, masked by min_tokens unless
  // p.ignore_eos.
  static std::unique_ptr<LogitEdits> make(const SamplingParams& p, std::span<const int32_t> prompt,
                                          std::span<const int32_t> eos_ids);

  // The output gained `token`.
  void add_output_token(int32_t token);
  // The edits for the next token of an output that has `num_generated` tokens.
  std::span<const kernels::LogitEdit> edits(int32_t num_generated) const;

 private:
  explicit LogitEdits(const SamplingParams& p);
  kernels::LogitEdit& entry(int32_t token);

  float repetition_;
  float frequency_;
  float presence_;
  int32_t min_tokens_;
  bool track_output_;                      // a penalty is on: output tokens get entries
  std::vector<kernels::LogitEdit> edits_;  // the min_tokens masks first, then one per token
  size_t num_masks_ = 0;
  std::unordered_map<int32_t, size_t> index_;   // token → its entry in edits_
  std::unordered_map<int32_t, int32_t> count_;  // token → times in the output
};

}  // namespace loraserve::engine
