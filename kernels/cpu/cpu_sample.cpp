// Token selection for one row of logits on the CPU: greedy or temperature / top-k / top-p
// sampling, and log-softmax logprobs of the raw logits.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace loraserve::kernels::cpu {

void sample_row(const float* logits, int64_t vocab, const SampleParams& params, SampleResult* out) {
  float max_logit = -INFINITY;
  int32_t argmax = 0;
  bool nan = false;
  for (int64_t i = 0; i < vocab; ++i) {
    nan |= std::isnan(logits[i]);
    if (logits[i] > max_logit) {
      max_logit = logits[i];
      argmax = static_cast<int32_t>(i);
    }
  }
  if (params.temperature <= 0.0f && !params.want_logprob && params.num_logprobs == 0) {
    // Greedy and no logprob wanted: the softmax over the vocabulary is not needed. The logprob
    // is NaN where the softmax's would be (a NaN or infinite logit, or none above -inf), which
    // the engine takes for the overflowed row it is.
    out->token_id = argmax;
    out->logprob = nan || !std::isfinite(max_logit) ? NAN : 0.0f;
    out->top.clear();
    return;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_logit));
  // logprob(i) = (logit_i - max) - log(sum): subtracting the max first keeps it exact for large
  // logits, where max + log(sum) would round to the logits' own (coarse) spacing.
  const float log_sum = static_cast<float>(std::log(sum));
  auto logprob = [&](int32_t i) { return (logits[i] - max_logit) - log_sum; };

  int32_t chosen = argmax;
  if (params.temperature > 0.0f) {
    // Candidates: all tokens, or the top_k largest (lowest id first among equal logits).
    std::vector<int32_t> cand;
    const bool need_order = params.top_k > 0 || params.top_p < 1.0f;
    if (need_order) {
      cand.resize(static_cast<size_t>(vocab));
      std::iota(cand.begin(), cand.end(), 0);
      auto by_logit = [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
      };
      const int64_t k = params.top_k > 0 ? std::min<int64_t>(params.top_k, vocab) : vocab;
      if (k < vocab) {
        std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), by_logit);
        cand.resize(static_cast<size_t>(k));
      } else {
        std::sort(cand.begin(), cand.end(), by_logit);
      }
    }
    const float inv_t = 1.0f / params.temperature;
    auto weight = [&](int32_t i) {
      return std::exp(static_cast<double>((logits[i] - max_logit) * inv_t));
    };
    if (!need_order) {
      double total = 0.0;
      for (int64_t i = 0; i < vocab; ++i) total += weight(static_cast<int32_t>(i));
      const double target = static_cast<double>(params.uniform) * total;
      double acc = 0.0;
      chosen = static_cast<int32_t>(vocab - 1);
      for (int64_t i = 0; i < vocab; ++i) {
        acc += weight(static_cast<int32_t>(i));
        if (acc > target) {
          chosen = static_cast<int32_t>(i);
          break;
        }
      }
    } else {
      std::vector<double> w(cand.size());
      double total = 0.0;
      for (size_t j = 0; j < cand.size(); ++j) total += (w[j] = weight(cand[j]));
      size_t keep = cand.size();
      if (params.top_p < 1.0f) {
        // Keep the smallest most-likely prefix whose probability reaches top_p.
        double acc = 0.0;
        for (size_t j = 0; j < cand.size(); ++j) {
          acc += w[j] / total;
          if (acc >= params.top_p) {
            keep = j + 1;
            break;
          }
        }
        total = std::accumulate(w.begin(), w.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
      }
      const double target = static_cast<double>(params.uniform) * total;
      double acc = 0.0;
      chosen = cand[keep - 1];
      for (size_t j = 0; j < keep; ++j) {
        acc += w[j];
        if (acc > target) {
          chosen = cand[j];
          break;
        }
      }
    }
  }
  out->token_id = chosen;
  out->logprob = logprob(chosen);
  out->top.clear();
  if (params.num_logprobs > 0) {
    const int64_t k = std::min<int64_t>(params.num_logprobs, vocab);
    std::vector<int32_t> idx(static_cast<size_t>(vocab));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t j = 0; j < k; ++j) out->top.push_back({idx[j], logprob(idx[j])});
  }
}

}  // namespace loraserve::kernels::cpu
