// The engine on the CPU backend against the PyTorch reference (tests/reference/): on every
// fixture model, every base-model golden case gives the same greedy tokens (compared as
// DESIGN.md says), logits within 1e-3 and logprobs within 1e-3.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "engine/loader.h"
#include "tests/reference/engine_runner.h"
#include "tests/reference/golden.h"

namespace loraserve::testing {
namespace {

constexpr double kEpsilon = 1e-3;  // DESIGN.md: near ties for fp32 compute
constexpr double kLogitTolerance = 1e-3;

Result<std::unique_ptr<engine::Engine>> open_cpu_engine(const std::string& model_dir) {
  kernels::BackendOptions backend;
  backend.device = "cpu";
  backend.cpu_weight_dtype = DType::kF32;  // the f32 path; weight_dtypes_test has BF16 and I8
  return engine::open_engine(model_dir, backend, engine::EngineOptions{});
}

TEST(ReferenceMatchTest, EveryFixtureIsPresent) {
  // The fixtures make_fixtures.py writes; a missing one would silently shrink the tests below.
  const std::vector<std::string> names = fixture_names();
  EXPECT_GE(names.size(), 5u) << "run the tests from the source root";
  for (const std::string& name : names) {
    auto golden = load_golden(name);
    ASSERT_TRUE(golden.ok()) << golden.status().to_string();
    int base = 0, adapter = 0;
    for (const GoldenCase& c : golden->cases) (c.adapter ? adapter : base)++;
    EXPECT_GE(base, 3) << name;
    EXPECT_GE(adapter, 3) << name;
  }
}

// One fixture model per parameter.
class ReferenceMatch : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceMatch, BaseCasesMatchThePyTorchReference) {
  auto golden = load_golden(GetParam());
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  auto engine = open_cpu_engine(golden->model_dir);
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  int cases = 0;
  for (const GoldenCase& c : golden->cases) {
    if (c.adapter) continue;
    ++cases;
    std::vector<engine::GenerationRequest> one;
    one.push_back(greedy_request(c.prompt_token_ids, static_cast<int32_t>(c.expected.steps())));
    auto traces = run_alone(**engine, std::move(one));
    ASSERT_TRUE(traces.ok()) << c.name << ": " << traces.status().to_string();
    const Comparison cmp = compare_traces(c.expected, (*traces)[0], kEpsilon);
    EXPECT_TRUE(cmp.tokens_match()) << c.name << ": " << cmp.mismatch;
    // The fixtures keep every reference gap above min_top2_gap >> epsilon: all steps count.
    EXPECT_EQ(cmp.compared_tokens, static_cast<int>(c.expected.steps())) << c.name;
    EXPECT_LE(cmp.max_logit_diff, kLogitTolerance) << c.name;
    EXPECT_LE(cmp.max_logprob_diff, kLogitTolerance) << c.name;
    RecordProperty(c.name + "_max_logit_diff", fmt::format("{:.3g}", cmp.max_logit_diff));
    std::printf("%s %s: %d tokens match, max |logit diff| %.3g, max |logprob diff| %.3g\n",
                GetParam().c_str(), c.name.c_str(), cmp.compared_tokens, cmp.max_logit_diff,
                cmp.max_logprob_diff);
  }
  EXPECT_GE(cases, 3);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferenceMatch, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) { return info.param; });

TEST(ReferenceMatchTest, ComparisonStopsAtTheFirstNearTie) {
  Trace ref;
  ref.token_ids = {1, 2, 3, 4};
  ref.top2_gap = {1.0, 1.0, 1e-4, 1.0};
  ref.logprobs = {-0.1, -0.2, -0.7, -0.1};
  ref.logits = {{0.0f, 1.0f}, {0.0f, 1.0f}, {0.0f, 1.0f}, {0.0f, 1.0f}};
  Trace got = ref;
  got.token_ids = {1, 2, 9, 9};  // flips at the near tie and then goes its own way
  got.logits[1] = {0.0f, 1.0005f};
  Comparison c = compare_traces(ref, got, kEpsilon);
  EXPECT_TRUE(c.tokens_match()) << c.mismatch;
  EXPECT_TRUE(c.near_tie);
  EXPECT_EQ(c.compared_tokens, 2);
  EXPECT_EQ(c.compared_logits, 3);  // step 2 still had the same context
  EXPECT_NEAR(c.max_logit_diff, 5e-4, 1e-6);

  got.token_ids = {1, 7, 3, 4};  // a flip where the reference was sure is a mismatch
  c = compare_traces(ref, got, kEpsilon);
  EXPECT_FALSE(c.tokens_match());
  EXPECT_EQ(c.compared_tokens, 1);
  EXPECT_NE(c.mismatch.find("step 1"), std::string::npos) << c.mismatch;

  got = ref;
  got.token_ids.resize(2);
  c = compare_traces(ref, got, kEpsilon);
  EXPECT_FALSE(c.tokens_match());
}

TEST(ReferenceMatchTest, RopeFrequenciesFollowLlama3Scaling) {
  formats::ModelConfig c;
  c.head_dim = 12;
  c.rope_theta = 10000.0;
  const std::vector<float> plain = engine::rope_inverse_frequencies(c);
  c.rope_scaling.type = formats::RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 64;
  const std::vector<float> scaled = engine::rope_inverse_frequencies(c);
  ASSERT_EQ(plain.size(), 6u);
  ASSERT_EQ(scaled.size(), 6u);
  int kept = 0, divided = 0, blended = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / plain[i];
    if (wavelen < 16) {
      EXPECT_EQ(scaled[i], plain[i]);
      ++kept;
    } else if (wavelen > 64) {
      EXPECT_FLOAT_EQ(scaled[i], plain[i] / 8.0f);
      ++divided;
    } else {
      const double smooth = (64 / wavelen - 1.0) / 3.0;
      EXPECT_NEAR(scaled[i], (1 - smooth) * plain[i] / 8 + smooth * plain[i], 1e-7);
      ++blended;
    }
  }
  EXPECT_EQ(kept, 1);
  EXPECT_EQ(blended, 1);
  EXPECT_EQ(divided, 4);
}

}  // namespace
}  // namespace loraserve::testing
