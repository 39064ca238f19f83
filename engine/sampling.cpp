#include "engine/sampling.h"

#include <random>

namespace loraserve::engine {

kernels::SampleParams next_sample_params(Sequence& seq) {
  const SamplingParams& p = seq.request.params;
  kernels::SampleParams out;
  // As vLLM: a temperature this small is greedy decoding. Sampling would divide by it, and below
  // FLT_MIN 1/t is infinite, which made every weight NaN and the pick the last token.
  out.temperature = p.temperature < kGreedyTemperature ? 0.0f : p.temperature;
  out.top_k = p.top_k;
  out.top_p = p.top_p;
  out.num_logprobs = p.logprobs;
  out.want_logprob = p.want_logprob;
  if (seq.logit_edits) out.edits = seq.logit_edits->edits(seq.num_generated());
  out.min_p = p.min_p;
  out.allowed = p.allowed_token_ids;
  out.uniform = std::uniform_real_distribution<float>(0.0f, 1.0f)(seq.rng);
  return out;
}

Status Sampler::sample(const kernels::Tensor& logits, std::span<Sequence* const> rows) {
  params_.resize(rows.size());
  for (size_t k = 0; k < rows.size(); ++k) params_[k] = next_sample_params(*rows[k]);
  results_.clear();
  if (!rows.empty()) LS_RETURN_IF_ERROR(backend_->sample(logits, params_, &results_));
  logits_.assign(rows.size(), {});
  for (size_t k = 0; k < rows.size(); ++k) {
    if (!rows[k]->request.return_logits) continue;
    logits_[k].resize(static_cast<size_t>(logits.cols));
    LS_RETURN_IF_ERROR(
        backend_->copy_to_host(logits.row_slice(static_cast<int64_t>(k), 1), logits_[k].data()));
  }
  return ok_status();
}

}  // namespace loraserve::engine
