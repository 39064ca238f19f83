// Bad requests fail alone, at submission, with INVALID_ARGUMENT naming what is wrong; the engine
// keeps serving afterwards. Good ones finish as their parameters say.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/loader.h"
#include "tests/reference/engine_runner.h"
#include "tests/reference/golden.h"

namespace loraserve::testing {
namespace {

// One engine on the llama_mha_f32 fixture (context 128, vocabulary 256) per test.
class RequestValidation : public ::testing::Test {
 protected:
  void SetUp() override {
    kernels::BackendOptions backend;
    backend.device = "cpu";
    auto engine = engine::open_engine(std::string(kFixturesDir) + "/llama_mha_f32", backend,
                                      engine::EngineOptions{});
    ASSERT_TRUE(engine.ok()) << engine.status().to_string();
    engine_ = std::move(*engine);
    ASSERT_EQ(engine_->config().max_context, 128);
    ASSERT_EQ(engine_->config().vocab_size, 256);
  }

  // Submits `r` and expects INVALID_ARGUMENT whose message contains every one of `words`.
  void expect_invalid(engine::GenerationRequest r, std::initializer_list<const char*> words) {
    auto id = engine_->submit(std::move(r));
    ASSERT_FALSE(id.ok());
    EXPECT_EQ(id.status().code(), StatusCode::kInvalidArgument) << id.status().to_string();
    for (const char* w : words)
      EXPECT_NE(id.status().message().find(w), std::string::npos) << id.status().to_string();
  }

  static std::vector<int32_t> prompt(size_t n) {
    std::vector<int32_t> p(n);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(3 + i % 200);
    return p;
  }

  std::unique_ptr<engine::Engine> engine_;
};

TEST_F(RequestValidation, PromptLongerThanTheContext) {
  expect_invalid(greedy_request(prompt(129), 1), {"prompt", "129", "128"});
  expect_invalid(greedy_request(prompt(128), 1), {"prompt", "128"});  // no room for one token
}

TEST_F(RequestValidation, MaxTokensPastTheContext) {
  expect_invalid(greedy_request(prompt(100), 29), {"max_tokens", "29", "128"});
  expect_invalid(greedy_request(prompt(10), 0), {"max_tokens"});
}

TEST_F(RequestValidation, PromptOutsideTheVocabulary) {
  std::vector<int32_t> p = prompt(8);
  p[5] = 256;
  expect_invalid(greedy_request(p, 4), {"256", "index 5", "vocabulary"});
  p[5] = -1;
  expect_invalid(greedy_request(p, 4), {"-1", "vocabulary"});
  expect_invalid(greedy_request({}, 4), {"prompt", "empty"});
}

TEST_F(RequestValidation, SamplingParameters) {
  auto with = [&](auto set) {
    engine::GenerationRequest r = greedy_request(prompt(8), 4);
    set(r.params);
    return r;
  };
  expect_invalid(with([](auto& p) { p.temperature = -0.5f; }), {"temperature"});
  expect_invalid(with([](auto& p) { p.temperature = NAN; }), {"temperature"});
  expect_invalid(with([](auto& p) { p.top_p = 0.0f; }), {"top_p"});
  expect_invalid(with([](auto& p) { p.top_p = 1.5f; }), {"top_p"});
  expect_invalid(with([](auto& p) { p.top_k = -1; }), {"top_k"});
  expect_invalid(with([](auto& p) { p.logprobs = engine::kMaxLogprobs + 1; }), {"logprobs"});
  expect_invalid(with([](auto& p) { p.stop_token_ids = {300}; }), {"stop_token_ids", "300"});
}

TEST_F(RequestValidation, TheEngineServesOnAfterRejections) {
  ASSERT_FALSE(engine_->submit(greedy_request(prompt(200), 1)).ok());
  TraceCollector collector;
  // A prompt that fills the context but for the one token it may generate.
  ASSERT_TRUE(collector.submit(*engine_, greedy_request(prompt(127), 1)).ok());
  engine::GenerationRequest r = greedy_request(prompt(20), 6);
  r.params.logprobs = 3;
  ASSERT_TRUE(collector.submit(*engine_, std::move(r)).ok());
  ASSERT_TRUE(engine_->run_until_idle().ok());
  ASSERT_TRUE(collector.all_finished().ok()) << collector.all_finished().to_string();
  EXPECT_EQ(collector.trace(0).steps(), 1u);
  EXPECT_EQ(collector.finish_reason(0), engine::FinishReason::kLength);
  EXPECT_EQ(collector.trace(1).steps(), 6u);
  EXPECT_EQ(collector.finish_reason(1), engine::FinishReason::kLength);
  EXPECT_EQ(engine_->stats().requests_finished, 2u);
}

TEST_F(RequestValidation, StopTokenEndsTheRequest) {
  // The greedy continuation of a golden case, stopped at its fourth token.
  auto golden = load_golden("llama_mha_f32");
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  const GoldenCase& c = golden->cases[0];
  engine::GenerationRequest r = greedy_request(c.prompt_token_ids, 32);
  const int32_t stop = c.expected.token_ids[3];
  r.params.stop_token_ids = {stop};
  TraceCollector collector;
  ASSERT_TRUE(collector.submit(*engine_, std::move(r)).ok());
  ASSERT_TRUE(engine_->run_until_idle().ok());
  ASSERT_TRUE(collector.all_finished().ok());
  const auto first = std::find(c.expected.token_ids.begin(), c.expected.token_ids.end(), stop);
  const auto expected_len = static_cast<size_t>(first - c.expected.token_ids.begin()) + 1;
  EXPECT_EQ(collector.trace(0).steps(), expected_len);
  EXPECT_EQ(collector.trace(0).token_ids.back(), stop);
  EXPECT_EQ(collector.finish_reason(0), engine::FinishReason::kStop);
}

}  // namespace
}  // namespace loraserve::testing
