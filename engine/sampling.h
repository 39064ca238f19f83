// Sampling: one token for each row of the step that samples, picked by the backend, with the
// uniform draw taken from the request's own generator (so a request's tokens do not depend on
// the batch it runs in); and, for requests that ask for them (tests), the raw logits of the row.
// Not thread-safe (engine thread).
#pragma once

#include <span>
#include <vector>

#include "common/status.h"
#include "engine/sequence.h"
#include "kernels/backend.h"

namespace loraserve::engine {

// Temperatures below this decode greedily (vLLM's _SAMPLING_EPS).
inline constexpr float kGreedyTemperature = 1e-5f;

// The backend's parameters for the next token of `seq`; draws one uniform from its generator.
kernels::SampleParams next_sample_params(Sequence& seq);

class Sampler {
 public:
  explicit Sampler(kernels::Backend* backend) : backend_(backend) {}

  // Samples logits row k for rows[k]. REQUIRES: logits.rows == rows.size().
  Status sample(const kernels::Tensor& logits, std::span<Sequence* const> rows);
  // Results of the last sample(), one per row.
  const std::vector<kernels::SampleResult>& results() const { return results_; }
  // Row k's raw logits, when rows[k] asked for them (else empty); the caller may move them out.
  std::vector<float>& logits(size_t k) { return logits_[k]; }

 private:
  kernels::Backend* backend_;
  std::vector<kernels::SampleParams> params_;
  std::vector<kernels::SampleResult> results_;
  std::vector<std::vector<float>> logits_;
};

}  // namespace loraserve::engine
