// Token selection for one row of logits on the CPU: greedy or temperature / min-p / top-k /
// top-p sampling over the row after the request's edits (logit_bias, penalties, min_tokens
// masks), and log-softmax logprobs of the raw logits.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace loraserve::kernels::cpu {
namespace {

// The largest value of a row and its lowest index (NaN is never the largest).
void row_max(const float* x, int64_t n, float* max, int32_t* at) {
  *max = -INFINITY;
  *at = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] > *max) {
      *max = x[i];
      *at = static_cast<int32_t>(i);
    }
  }
}

}  // namespace

void sample_row(const float* raw, int64_t vocab, const SampleParams& params, SampleResult* out) {
  float max_raw = -INFINITY;
  int32_t argmax_raw = 0;
  row_max(raw, vocab, &max_raw, &argmax_raw);
  bool nan = false;
  for (int64_t i = 0; i < vocab; ++i) nan |= std::isnan(raw[i]);

  // The row the token is picked from: the raw logits, or a copy with the edits applied.
  const float* logits = raw;
  float max_logit = max_raw;
  int32_t argmax = argmax_raw;
  thread_local std::vector<float> edited;
  if (!params.edits.empty()) {
    edited.assign(raw, raw + vocab);
    for (const LogitEdit& e : params.edits) {
      float x = edited[static_cast<size_t>(e.token_id)] + e.bias;
      x = x > 0.0f ? x / e.penalty : x * e.penalty;
      // A tiny penalty can overflow a logit to +inf, which would make every weight NaN; -inf
      // (a mask, or an overflow downwards) stays: that token is never picked.
      edited[static_cast<size_t>(e.token_id)] = std::min(x - e.subtract, FLT_MAX);
    }
    float max_edited = -INFINITY;
    int32_t argmax_edited = 0;
    row_max(edited.data(), vocab, &max_edited, &argmax_edited);
    // Should the edits mask every token (stop_token_ids that cover the vocabulary, with
    // min_tokens), the raw row is picked from.
    if (max_edited > -INFINITY) {
      logits = edited.data();
      max_logit = max_edited;
      argmax = argmax_edited;
    }
  }
  if (params.temperature <= 0.0f && !params.want_logprob && params.num_logprobs == 0) {
    // Greedy and no logprob wanted: the softmax over the vocabulary is not needed. The logprob
    // is NaN where the softmax's would be (a NaN or infinite logit, or none above -inf), which
    // the engine takes for the overflowed row it is.
    out->token_id = argmax;
    out->logprob = nan || !std::isfinite(max_raw) ? NAN : 0.0f;
    out->top.clear();
    return;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(raw[i] - max_raw));
  // logprob(i) = (logit_i - max) - log(sum): subtracting the max first keeps it exact for large
  // logits, where max + log(sum) would round to the logits' own (coarse) spacing.
  const float log_sum = static_cast<float>(std::log(sum));
  auto logprob = [&](int32_t i) { return (raw[i] - max_raw) - log_sum; };

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
    // A token's weight is its probability over the most likely token's: min_p drops those below.
    const double min_p = params.min_p;
    auto weight = [&](int32_t i) {
      const double w = std::exp(static_cast<double>((logits[i] - max_logit) * inv_t));
      return w < min_p ? 0.0 : w;
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
      return raw[a] > raw[b] || (raw[a] == raw[b] && a < b);
    });
    for (int64_t j = 0; j < k; ++j) out->top.push_back({idx[j], logprob(idx[j])});
  }
}

}  // namespace loraserve::kernels::cpu
