// Token selection on the CPU (kernels/cpu/cpu_sample.cpp): greedy with ties to the lowest id,
// temperature, top-k, top-p as the smallest most-likely prefix reaching p, logprobs as the
// log-softmax of the raw logits, and the same draw always giving the same token.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_exp.h"
#include "kernels/cpu/cpu_features.h"

namespace loraserve::kernels {
namespace {

SampleResult sample(const std::vector<float>& logits, const SampleParams& p) {
  SampleResult r;
  cpu::sample_row(logits.data(), static_cast<int64_t>(logits.size()), p, &r);
  return r;
}

SampleParams params(float temperature, int32_t top_k = 0, float top_p = 1.0f, float u = 0.0f) {
  SampleParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.uniform = u;
  return p;
}

// Every token the draw can pick, over a fine grid of uniform values.
std::set<int32_t> reachable(const std::vector<float>& logits, SampleParams p) {
  std::set<int32_t> ids;
  for (int i = 0; i < 1000; ++i) {
    p.uniform = static_cast<float>(i) / 1000.0f;
    ids.insert(sample(logits, p).token_id);
  }
  return ids;
}

double log_softmax(const std::vector<float>& logits, size_t i) {
  double m = -INFINITY, sum = 0;
  for (float v : logits) m = std::max(m, static_cast<double>(v));
  for (float v : logits) sum += std::exp(v - m);
  return logits[i] - m - std::log(sum);
}

TEST(CpuSampleTest, GreedyTakesTheMaximumAndTheLowestIdOnTies) {
  const std::vector<float> logits = {1.0f, 5.0f, 3.0f, 5.0f, -2.0f};
  for (float u : {0.0f, 0.5f, 0.999f}) EXPECT_EQ(sample(logits, params(0, 0, 1, u)).token_id, 1);
  EXPECT_EQ(sample({-1.0f, -1.0f}, params(0)).token_id, 0);
  EXPECT_EQ(sample({-3.0f, 2.0f, 7.5f}, params(0)).token_id, 2);
}

TEST(CpuSampleTest, LogprobsAreTheLogSoftmaxOfTheRawLogits) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.0f, -1.0f, 0.5f};
  SampleParams p = params(0);
  p.num_logprobs = 3;
  SampleResult r = sample(logits, p);
  EXPECT_EQ(r.token_id, 0);
  EXPECT_NEAR(r.logprob, log_softmax(logits, 0), 1e-6);
  ASSERT_EQ(r.top.size(), 3u);
  const int32_t order[] = {0, 1, 4};
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(r.top[k].token_id, order[k]);
    EXPECT_NEAR(r.top[k].logprob, log_softmax(logits, static_cast<size_t>(order[k])), 1e-6);
  }
  // Temperature and top-k change which token is drawn, not how its logprob is reported.
  p = params(3.0f, 2, 1.0f, 0.99f);
  r = sample(logits, p);
  EXPECT_EQ(r.token_id, 1);
  EXPECT_NEAR(r.logprob, log_softmax(logits, 1), 1e-6);
  EXPECT_TRUE(r.top.empty());
}

TEST(CpuSampleTest, LogprobsStayFiniteForLargeLogits) {
  SampleResult r = sample({1e4f, 1e4f - 1.0f, -1e4f}, params(0));
  EXPECT_EQ(r.token_id, 0);
  EXPECT_NEAR(r.logprob, -std::log1p(std::exp(-1.0)), 1e-5);
}

TEST(CpuSampleTest, TemperatureScalesTheDistribution) {
  // Two tokens: p(0) = 1 / (1 + e^(1/T)); the draw picks 0 when u < p(0).
  const std::vector<float> logits = {0.0f, 1.0f};
  for (float t : {0.5f, 1.0f, 2.0f}) {
    const double p0 = 1.0 / (1.0 + std::exp(1.0 / t));
    EXPECT_EQ(sample(logits, params(t, 0, 1, static_cast<float>(p0 - 1e-3))).token_id, 0) << t;
    EXPECT_EQ(sample(logits, params(t, 0, 1, static_cast<float>(p0 + 1e-3))).token_id, 1) << t;
  }
}

TEST(CpuSampleTest, TopKKeepsTheKMostLikely) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.9f, 2.8f};
  EXPECT_EQ(reachable(logits, params(1.0f, 1)), (std::set<int32_t>{1}));
  EXPECT_EQ(reachable(logits, params(1.0f, 2)), (std::set<int32_t>{1, 3}));
  EXPECT_EQ(reachable(logits, params(1.0f, 3)), (std::set<int32_t>{1, 3, 4}));
  EXPECT_EQ(reachable(logits, params(1.0f, 100)).size(), 5u);
  // Within the top 2, the draw follows their renormalised probabilities.
  const double p1 = 1.0 / (1.0 + std::exp(-0.1));
  EXPECT_EQ(sample(logits, params(1.0f, 2, 1, static_cast<float>(p1 - 1e-3))).token_id, 1);
  EXPECT_EQ(sample(logits, params(1.0f, 2, 1, static_cast<float>(p1 + 1e-3))).token_id, 3);
}

TEST(CpuSampleTest, TopPKeepsTheSmallestPrefixReachingP) {
  // Probabilities 0.5 (id 2), 0.3 (id 0), 0.15 (id 3), 0.05 (id 1).
  const std::vector<float> logits = {std::log(0.3f), std::log(0.05f), std::log(0.5f),
                                     std::log(0.15f)};
  EXPECT_EQ(reachable(logits, params(1.0f, 0, 0.4f)), (std::set<int32_t>{2}));
  EXPECT_EQ(reachable(logits, params(1.0f, 0, 0.75f)), (std::set<int32_t>{2, 0}));
  EXPECT_EQ(reachable(logits, params(1.0f, 0, 0.9f)), (std::set<int32_t>{2, 0, 3}));
  EXPECT_EQ(reachable(logits, params(1.0f, 0, 1.0f)), (std::set<int32_t>{0, 1, 2, 3}));
  // Kept {2, 0}: renormalised, id 2 holds 0.5 / 0.8 = 0.625 of the mass.
  EXPECT_EQ(sample(logits, params(1.0f, 0, 0.75f, 0.62f)).token_id, 2);
  EXPECT_EQ(sample(logits, params(1.0f, 0, 0.75f, 0.63f)).token_id, 0);
  // top-k first, then top-p over the renormalised rest: k = 3 leaves 0.5, 0.3 and 0.15, where
  // the first two hold 0.8 / 0.95 = 0.842 >= 0.83; without top-k they hold 0.8 < 0.83.
  EXPECT_EQ(reachable(logits, params(1.0f, 3, 0.83f)), (std::set<int32_t>{2, 0}));
  EXPECT_EQ(reachable(logits, params(1.0f, 0, 0.83f)), (std::set<int32_t>{2, 0, 3}));
}

// The draw over top-k / top-p (which walks the logit-sorted order) as the plain rule says, by a
// full sort of the row: the sampler sorts only what the draw walks, and must pick the same token.
int32_t full_sort_pick(const std::vector<float>& logits, const SampleParams& p) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < order.size()) order.resize(p.top_k);
  const float top = logits[order[0]];
  std::vector<double> w;
  for (int32_t i : order)
    w.push_back(std::exp(static_cast<double>((logits[i] - top) / p.temperature)));
  double total = std::accumulate(w.begin(), w.end(), 0.0);
  size_t keep = order.size();
  double acc = 0.0;
  for (size_t j = 0; j < order.size() && p.top_p < 1.0f; ++j) {
    if ((acc += w[j] / total) >= p.top_p) {
      keep = j + 1;
      break;
    }
  }
  total = std::accumulate(w.begin(), w.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  acc = 0.0;
  for (size_t j = 0; j < keep; ++j)
    if ((acc += w[j]) > p.uniform * total) return order[j];
  return order[keep - 1];
}

TEST(CpuSampleTest, TopKAndTopPMatchAFullSortOnLargeRows) {
  std::mt19937 rng(5);
  for (float spread : {0.5f, 2.0f, 6.0f}) {
    std::normal_distribution<float> normal(0.0f, spread);
    std::vector<float> logits(5000);
    // Quarter steps: many equal logits, ordered by id.
    for (float& v : logits) v = std::round(normal(rng) * 4.0f) / 4.0f;
    int compared = 0;
    for (int32_t top_k : {0, 1, 7, 300, 4999, 6000}) {
      for (float top_p : {0.05f, 0.5f, 0.9f, 0.99f, 0.9999f, 1.0f}) {
        if (top_k == 0 && top_p == 1.0f) continue;  // unfiltered: the draw walks id order
        for (float u : {0.0f, 0.13f, 0.5f, 0.77f, 0.999f}) {
          const SampleParams p = params(0.9f, top_k, top_p, u);
          EXPECT_EQ(sample(logits, p).token_id, full_sort_pick(logits, p))
              << "spread " << spread << " top_k " << top_k << " top_p " << top_p << " u " << u;
          ++compared;
        }
      }
    }
    EXPECT_EQ(compared, 175);
  }
}

TEST(CpuSampleTest, MaskedTokensAreNeverDrawn) {
  const std::vector<float> logits = {-INFINITY, 0.0f, 1.0f};
  EXPECT_EQ(reachable(logits, params(1.0f)), (std::set<int32_t>{1, 2}));
  EXPECT_EQ(reachable(logits, params(1.0f, 0, 0.99f)), (std::set<int32_t>{1, 2}));
}

// The edits in vLLM's order: x + bias, then divided by the penalty if positive (multiplied if
// not), then minus subtract; the token is picked from the edited row, the logprobs stay raw.
TEST(CpuSampleTest, EditsChangeThePickNotTheLogprobs) {
  const std::vector<float> logits = {2.0f, 1.9f, -0.5f, 0.4f};
  SampleParams p = params(0);
  p.num_logprobs = 2;
  // Token 0: (2 + 0) / 2 = 1.0; token 1 stays 1.9: the pick moves to 1.
  const std::vector<LogitEdit> penalty = {{0, 0.0f, 2.0f, 0.0f}};
  p.edits = penalty;
  SampleResult r = sample(logits, p);
  EXPECT_EQ(r.token_id, 1);
  EXPECT_NEAR(r.logprob, log_softmax(logits, 1), 1e-6);
  ASSERT_EQ(r.top.size(), 2u);
  EXPECT_EQ(r.top[0].token_id, 0);  // the raw order
  // Token 2: (-0.5 + 3) = 2.5 > 0, so / 2 = 1.25, minus 0.5 = 0.75: between 0.7 and 0.9. In
  // another order it would be -0.5 * 2 + 3 - 0.5 = 1.5 (penalty first) or (2.5 - 0.5) / 2 = 1.0
  // (subtract first).
  const std::vector<LogitEdit> above = {
      {2, 3.0f, 2.0f, 0.5f}, {0, 0.0f, 1.0f, 1.1f}, {1, 0.0f, 1.0f, 1.0f}};
  p.edits = above;
  EXPECT_EQ(sample(logits, p).token_id, 0);  // 0.9, 0.9, 0.75, 0.4
  const std::vector<LogitEdit> below = {
      {2, 3.0f, 2.0f, 0.5f}, {0, 0.0f, 1.0f, 1.3f}, {1, 0.0f, 1.0f, 1.2f}};
  p.edits = below;
  EXPECT_EQ(sample(logits, p).token_id, 2);  // 0.7, 0.7, 0.75, 0.4
  // A negative logit is multiplied: -0.5 * 0.25 = -0.125 (a penalty below 1 favours it).
  const std::vector<LogitEdit> favour = {{2, 0.0f, 0.25f, 0.0f},
                                         {0, -3.0f, 1.0f, 0.0f},
                                         {1, -3.0f, 1.0f, 0.0f},
                                         {3, -1.0f, 1.0f, 0.0f}};
  p.edits = favour;
  EXPECT_EQ(sample(logits, p).token_id, 2);
  // A mask: -inf whatever follows; a token may be edited twice.
  const std::vector<LogitEdit> masked = {{0, -INFINITY, 1.0f, 0.0f}, {0, 5.0f, 2.0f, -1.0f}};
  p.edits = masked;
  EXPECT_EQ(sample(logits, p).token_id, 1);
  EXPECT_EQ(reachable(logits,
                      [&] {
                        SampleParams q = params(1.0f);
                        q.edits = masked;
                        return q;
                      }()),
            (std::set<int32_t>{1, 2, 3}));
  // Every token masked: the raw row is picked from.
  const std::vector<LogitEdit> all = {{0, -INFINITY, 1.0f, 0.0f},
                                      {1, -INFINITY, 1.0f, 0.0f},
                                      {2, -INFINITY, 1.0f, 0.0f},
                                      {3, -INFINITY, 1.0f, 0.0f}};
  p.edits = all;
  EXPECT_EQ(sample(logits, p).token_id, 0);
  // A tiny penalty overflows a logit to +inf: it wins, and sampling stays defined.
  const std::vector<LogitEdit> huge = {{3, 0.0f, 1e-40f, 0.0f}};
  SampleParams q = params(1.0f, 0, 1.0f, 0.5f);
  q.edits = huge;
  EXPECT_EQ(sample(logits, q).token_id, 3);
}

// allowed_token_ids: only those tokens can be picked, before the edits; the logprobs stay raw.
TEST(CpuSampleTest, OnlyAllowedTokensArePicked) {
  const std::vector<float> logits = {2.0f, 1.9f, -0.5f, 0.4f, 1.0f};
  const std::vector<int32_t> allowed = {3, 2, 3};
  SampleParams p = params(0);
  p.allowed = allowed;
  p.want_logprob = true;
  SampleResult r = sample(logits, p);
  EXPECT_EQ(r.token_id, 3);
  EXPECT_NEAR(r.logprob, log_softmax(logits, 3), 1e-6);
  SampleParams q = params(1.0f);
  q.allowed = allowed;
  EXPECT_EQ(reachable(logits, q), (std::set<int32_t>{2, 3}));
  q.top_k = 1;
  EXPECT_EQ(reachable(logits, q), (std::set<int32_t>{3}));
  // Edits apply within them: token 3 loses 1, token 2 (-0.5) is picked.
  const std::vector<LogitEdit> edit = {{3, 0.0f, 1.0f, 1.0f}};
  p.edits = edit;
  EXPECT_EQ(sample(logits, p).token_id, 2);
  // Edits that mask every allowed token are dropped, not the restriction.
  const std::vector<LogitEdit> masks = {{2, -INFINITY, 1.0f, 0.0f}, {3, -INFINITY, 1.0f, 0.0f}};
  p.edits = masks;
  EXPECT_EQ(sample(logits, p).token_id, 3);
}

// min_p keeps the tokens whose probability after temperature is at least min_p times the top
// one's, before top-k and top-p.
TEST(CpuSampleTest, MinPKeepsTokensNearTheMostLikely) {
  // Probabilities 0.5 (id 2), 0.3 (id 0), 0.15 (id 3), 0.05 (id 1): ratios 1, 0.6, 0.3, 0.1.
  const std::vector<float> logits = {std::log(0.3f), std::log(0.05f), std::log(0.5f),
                                     std::log(0.15f)};
  auto with = [](SampleParams p, float min_p) {
    p.min_p = min_p;
    return p;
  };
  EXPECT_EQ(reachable(logits, with(params(1.0f), 0.0f)), (std::set<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(reachable(logits, with(params(1.0f), 0.2f)), (std::set<int32_t>{0, 2, 3}));
  EXPECT_EQ(reachable(logits, with(params(1.0f), 0.5f)), (std::set<int32_t>{0, 2}));
  EXPECT_EQ(reachable(logits, with(params(1.0f), 1.0f)), (std::set<int32_t>{2}));
  // After temperature 0.5 the ratios square: 1, 0.36, 0.09, 0.01.
  EXPECT_EQ(reachable(logits, with(params(0.5f), 0.2f)), (std::set<int32_t>{0, 2}));
  // Kept {2, 0} renormalised: id 2 holds 0.5 / 0.8 = 0.625, in token-id order 0 comes first
  // with 0.375.
  EXPECT_EQ(sample(logits, with(params(1.0f, 0, 1, 0.37f), 0.5f)).token_id, 0);
  EXPECT_EQ(sample(logits, with(params(1.0f, 0, 1, 0.38f), 0.5f)).token_id, 2);
  // Then top-p over what min_p kept: {2, 0, 3} renormalised over 0.95; 2 and 0 hold 0.842.
  EXPECT_EQ(reachable(logits, with(params(1.0f, 0, 0.84f), 0.2f)), (std::set<int32_t>{2, 0}));
  // Greedy ignores it.
  EXPECT_EQ(sample(logits, with(params(0.0f), 1.0f)).token_id, 2);
}

TEST(CpuSampleTest, TheBackendRefusesTokensOutsideTheVocabulary) {
  auto backend = create_cpu_backend(1);
  auto buf = backend->allocate(4 * 4);
  ASSERT_TRUE(buf.ok());
  const Tensor t = buf->view(DType::kF32, 1, 4);
  const std::vector<float> zeros(4, 0.0f);
  ASSERT_TRUE(backend->copy_to_device(t, zeros.data(), DType::kF32, 4).ok());
  std::vector<SampleResult> out;
  for (const LogitEdit& bad : {LogitEdit{4, 1.0f, 1.0f, 0.0f}, LogitEdit{-1, 1.0f, 1.0f, 0.0f},
                               LogitEdit{0, 1.0f, 0.0f, 0.0f}}) {
    std::vector<SampleParams> p(1, params(0));
    p[0].edits = std::span(&bad, 1);
    const Status st = backend->sample(t, p, &out);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  }
  for (const int32_t bad : {4, -1}) {
    std::vector<SampleParams> p(1, params(0));
    p[0].allowed = std::span(&bad, 1);
    EXPECT_EQ(backend->sample(t, p, &out).code(), StatusCode::kInvalidArgument);
  }
}

TEST(CpuSampleTest, TheSameDrawGivesTheSameTokenAloneOrInABatch) {
  auto backend = create_cpu_backend(2);
  const int64_t rows = 4, vocab = 50;
  std::vector<float> logits(static_cast<size_t>(rows * vocab));
  for (size_t i = 0; i < logits.size(); ++i)
    logits[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * 3.0);
  auto buf = backend->allocate(logits.size() * 4);
  ASSERT_TRUE(buf.ok());
  const Tensor t = buf->view(DType::kF32, rows, vocab);
  ASSERT_TRUE(backend->copy_to_device(t, logits.data(), DType::kF32, logits.size()).ok());
  std::vector<SampleParams> p = {params(0), params(0.7f, 5, 1, 0.3f), params(1.2f, 0, 0.8f, 0.9f),
                                 params(1.0f, 0, 1, 0.5f)};
  p[1].num_logprobs = 2;
  std::vector<SampleResult> batch;
  ASSERT_TRUE(backend->sample(t, p, &batch).ok());
  ASSERT_EQ(batch.size(), 4u);
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> row(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
    for (int repeat = 0; repeat < 2; ++repeat) {
      const SampleResult alone = sample(row, p[static_cast<size_t>(r)]);
      EXPECT_EQ(alone.token_id, batch[static_cast<size_t>(r)].token_id) << r;
      EXPECT_EQ(alone.logprob, batch[static_cast<size_t>(r)].logprob) << r;
      EXPECT_EQ(alone.top.size(), batch[static_cast<size_t>(r)].top.size()) << r;
    }
  }
  std::vector<SampleParams> wrong(3);
  EXPECT_FALSE(backend->sample(t, wrong, &batch).ok());  // one params entry per row
}

// Distance in units in the last place between two non-negative doubles (their bit patterns are
// ordered like their values, subnormals and zero included).
int64_t ulp_distance(double a, double b) {
  int64_t ia, ib;
  std::memcpy(&ia, &a, sizeof a);
  std::memcpy(&ib, &b, sizeof b);
  return ia > ib ? ia - ib : ib - ia;
}

// Every kernel level the CPU runs: libmvec's exponentials within glibc's documented 4 ulp of
// std::exp, exactly 0 for -inf, 1 for a zero difference, and the tails past the last full vector
// computed too; and the same draws, tokens and logprobs as std::exp gives.
TEST(CpuSampleTest, TheSamplersExponentialsMatchStdExpAtEveryKernelLevel) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(1003);  // not a multiple of 8 or 4: the tails
  for (float& v : x) v = normal(rng);
  x[0] = 2.5f;       // the shift: a zero difference
  x[1] = -INFINITY;  // a masked token
  x[2] = -700.0f;    // results near the smallest normal double and below it
  x[3] = -740.0f;
  x[4] = -800.0f;       // underflows to 0
  x[1002] = -INFINITY;  // in the tail
  const std::vector<float> scales = {1.0f, 1.25f, 1.0f / 0.7f, 10.0f};
  std::vector<float> row(20000);
  for (float& v : row) v = normal(rng);
  const cpu::KernelLevel best = cpu::best_kernel_level();
  std::vector<SampleParams> draws;
  for (float u : {0.0f, 0.21f, 0.5f, 0.93f}) {
    draws.push_back(params(0.8f, 0, 1.0f, u));
    draws.push_back(params(1.3f, 0, 0.9f, u));
    draws.back().num_logprobs = 3;
  }
  std::vector<SampleResult> at_best;
  for (cpu::KernelLevel level : {cpu::KernelLevel::kAvx512Bf16, cpu::KernelLevel::kAvx512,
                                 cpu::KernelLevel::kAvx2, cpu::KernelLevel::kPortable}) {
    if (level > best) continue;
    cpu::cap_kernel_level(level);
    SCOPED_TRACE(std::string(cpu::kernel_level_name(level)));
    for (float scale : scales) {
      std::vector<double> got(x.size());
      cpu::exp_shifted(x.data(), static_cast<int64_t>(x.size()), 2.5f, scale, got.data());
      for (size_t i = 0; i < x.size(); ++i) {
        const double want = std::exp(static_cast<double>((x[i] - 2.5f) * scale));
        EXPECT_LE(ulp_distance(got[i], want), 4) << "x " << x[i] << " scale " << scale;
      }
      EXPECT_EQ(got[0], 1.0);
      EXPECT_EQ(got[1], 0.0);
      EXPECT_EQ(got[4], 0.0);
      EXPECT_EQ(got[1002], 0.0);
    }
    std::vector<SampleResult> results;
    for (const SampleParams& p : draws) results.push_back(sample(row, p));
    if (at_best.empty()) {
      at_best = results;
      continue;
    }
    for (size_t j = 0; j < results.size(); ++j) {
      EXPECT_EQ(results[j].token_id, at_best[j].token_id) << j;
      EXPECT_NEAR(results[j].logprob, at_best[j].logprob, 1e-6) << j;
    }
  }
  cpu::cap_kernel_level(best);
}

}  // namespace
}  // namespace loraserve::kernels
