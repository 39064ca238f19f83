// Token selection for one row of logits on the CPU: greedy or temperature / min-p / top-k /
// top-p sampling over the row after the request's edits (logit_bias, penalties, min_tokens
// masks), and log-softmax logprobs of the raw logits.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_exp.h"

namespace loraserve::kernels::cpu {
namespace {

// The largest value of a row and its lowest index (NaN is never the largest); whether the row
// holds a NaN, when `has_nan` is given.
void row_max(const float* x, int64_t n, float* max, int32_t* at, bool* has_nan = nullptr) {
  *max = -INFINITY;
  *at = 0;
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    nan |= std::isnan(x[i]);
    if (x[i] > *max) {
      *max = x[i];
      *at = static_cast<int32_t>(i);
    }
  }
  if (has_nan != nullptr) *has_nan = nan;
}

}  // namespace

void sample_row(const float* raw, int64_t vocab, const SampleParams& params, SampleResult* out) {
  float max_raw = -INFINITY;
  int32_t argmax_raw = 0;
  bool nan = false;
  row_max(raw, vocab, &max_raw, &argmax_raw, &nan);

  // The row the token is picked from: the raw logits, or a copy restricted to the allowed
  // tokens (the others -inf) and with the edits applied.
  const float* logits = raw;
  float max_logit = max_raw;
  int32_t argmax = argmax_raw;
  thread_local std::vector<float> edited;
  auto restrict_to_allowed = [&] {
    if (params.allowed.empty()) {
      edited.assign(raw, raw + vocab);
      return;
    }
    edited.assign(static_cast<size_t>(vocab), -INFINITY);
    for (int32_t id : params.allowed) edited[static_cast<size_t>(id)] = raw[id];
  };
  if (!params.allowed.empty() || !params.edits.empty()) {
    restrict_to_allowed();
    for (const LogitEdit& e : params.edits) {
      float x = edited[static_cast<size_t>(e.token_id)] + e.bias;
      x = x > 0.0f ? x / e.penalty : x * e.penalty;
      // A tiny penalty can overflow a logit to +inf, which would make every weight NaN; -inf
      // (a mask, or an overflow downwards) stays: that token is never picked.
      edited[static_cast<size_t>(e.token_id)] = std::min(x - e.subtract, FLT_MAX);
    }
    row_max(edited.data(), vocab, &max_logit, &argmax);
    // Should the edits mask every token left (min_tokens with stop_token_ids that cover the
    // allowed tokens or the vocabulary), the row is picked from without them.
    if (!(max_logit > -INFINITY) && !params.edits.empty()) {
      restrict_to_allowed();
      row_max(edited.data(), vocab, &max_logit, &argmax);
    }
    if (max_logit > -INFINITY) {
      logits = edited.data();
    } else {  // the allowed tokens' own logits are all -inf: nothing to restrict to
      max_logit = max_raw;
      argmax = argmax_raw;
    }
  }
  if (nan || !std::isfinite(max_raw)) {
    // A NaN or infinite logit, or none above -inf: the logprob is NaN, which the engine takes
    // for the overflowed row it is (the request ends with an error). Nothing is sorted: NaN
    // has no order.
    out->token_id = argmax;
    out->logprob = NAN;
    out->top.clear();
    return;
  }
  // The softmax of the raw row only when a logprob is wanted (then it is left 0).
  const bool want_logprobs = params.want_logprob || params.num_logprobs > 0;
  float log_sum = 0.0f;
  if (want_logprobs) {
    thread_local std::vector<double> e;
    e.resize(static_cast<size_t>(vocab));
    exp_shifted(raw, vocab, max_raw, 1.0f, e.data());
    double sum = 0.0;
    for (const double v : e) sum += v;
    log_sum = static_cast<float>(std::log(sum));
  }
  // logprob(i) = (logit_i - max) - log(sum): subtracting the max first keeps it exact for large
  // logits, where max + log(sum) would round to the logits' own (coarse) spacing.
  auto logprob = [&](int32_t i) { return (raw[i] - max_raw) - log_sum; };

  int32_t chosen = argmax;
  if (params.temperature > 0.0f) {
    const float inv_t = 1.0f / params.temperature;
    // A token's weight is its probability over the most likely token's: min_p drops those below.
    const double min_p = params.min_p;
    // Without top-k every token's weight is read, by the draw or top-p's sums: all are computed
    // up front, eight at a time (cpu_exp.h); with top-k only the candidates', when read.
    thread_local std::vector<double> weights;
    const bool every_weight = params.top_k <= 0 || params.top_k >= vocab;
    if (every_weight) {
      weights.resize(static_cast<size_t>(vocab));
      exp_shifted(logits, vocab, max_logit, inv_t, weights.data());
      for (double& w : weights) w = w < min_p ? 0.0 : w;
    }
    auto weight = [&](int32_t i) {
      if (every_weight) return weights[static_cast<size_t>(i)];
      const double w = exp_shifted_one(logits[i], max_logit, inv_t);
      return w < min_p ? 0.0 : w;
    };
    if (params.top_k <= 0 && !(params.top_p < 1.0f)) {
      // The draw walks the tokens in id order.
      double total = 0.0;
      for (const double w : weights) total += w;
      const double target = static_cast<double>(params.uniform) * total;
      double acc = 0.0;
      chosen = static_cast<int32_t>(vocab - 1);
      for (int64_t i = 0; i < vocab; ++i) {
        acc += weights[static_cast<size_t>(i)];
        if (acc > target) {
          chosen = static_cast<int32_t>(i);
          break;
        }
      }
    } else {
      // The candidates, most likely first (lowest id first among equal logits): all tokens, or
      // the top_k largest; then, with top_p, the smallest prefix whose probability reaches it.
      // Only what the draw walks is sorted: a growing prefix for top_p (a sort of the whole
      // vocabulary took 7 ms a row at 128K tokens).
      auto by_logit = [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
      };
      std::vector<int32_t> cand(static_cast<size_t>(vocab));
      std::iota(cand.begin(), cand.end(), 0);
      const int64_t k = params.top_k > 0 ? std::min<int64_t>(params.top_k, vocab) : vocab;
      if (k < vocab) {
        std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), by_logit);
        cand.resize(static_cast<size_t>(k));
      }
      double total = 0.0;
      for (int32_t i : cand) total += weight(i);
      size_t keep = cand.size();
      if (params.top_p < 1.0f) {
        // Keep the smallest most-likely prefix whose probability reaches top_p.
        for (size_t sorted = std::min<size_t>(256, cand.size());; sorted *= 8) {
          sorted = std::min(sorted, cand.size());
          const auto mid = cand.begin() + static_cast<std::ptrdiff_t>(sorted);
          if (sorted < cand.size()) std::nth_element(cand.begin(), mid - 1, cand.end(), by_logit);
          std::sort(cand.begin(), mid, by_logit);
          double acc = 0.0;
          size_t j = 0;
          while (j < sorted && (acc += weight(cand[j]) / total) < params.top_p) ++j;
          if (j < sorted) {
            keep = j + 1;
            break;
          }
          if (sorted == cand.size()) break;  // rounding kept the sum below top_p: keep all
        }
      } else {
        std::sort(cand.begin(), cand.end(), by_logit);
      }
      std::vector<double> w(keep);
      for (size_t j = 0; j < keep; ++j) w[j] = weight(cand[j]);
      total = std::accumulate(w.begin(), w.end(), 0.0);
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
  out->logprob = want_logprobs ? logprob(chosen) : 0.0f;
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
