// Fair scheduling through a real engine (the fixture model, two LoRA tasks), counted in engine
// steps so that nothing depends on the machine's speed: task "flood" submits 400 requests at
// once, then task "probe" submits 10 requests one after another. Under VTC each probe's first
// token comes within a few steps (at most the longest flood request's output: the probe starts
// at the first free batch slot after at most one flood request); under FIFO the first probe
// waits for the whole flood. Both policies generate exactly the same tokens for every request
// (order never changes outputs), and the flood's tokens per step are the same within 5%.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "engine/loader.h"
#include "tests/reference/engine_runner.h"

namespace loraserve::testing {
namespace {

constexpr const char* kModel = "tests/reference/fixtures/llama_mha_f32";
constexpr int kFlood = 400;
constexpr int kProbes = 10;
constexpr int32_t kMaxBatchSize = 16;
constexpr int32_t kFloodOutputMax = 96;

struct PolicyRun {
  // Steps each probe waited: run after its submission before the one that gave its first token.
  std::vector<int64_t> probe_wait_steps;
  std::map<uint64_t, std::vector<int32_t>> tokens;  // by submission order
  uint64_t steps = 0;
  uint64_t flood_tokens = 0;
};

PolicyRun run(engine::FairnessPolicy policy) {
  PolicyRun out;
  engine::EngineOptions o;
  o.max_batch_size = kMaxBatchSize;
  o.max_batched_tokens = 256;
  o.max_queue = 1024;
  o.max_lora_rank = 16;
  o.fairness.policy = policy;
  kernels::BackendOptions bo;
  bo.device = "cpu";
  bo.cpu_threads = 1;
  auto opened = engine::open_engine(kModel, bo, o);
  EXPECT_TRUE(opened.ok()) << opened.status().to_string();
  if (!opened.ok()) return out;
  engine::Engine& e = **opened;
  const std::string adapters = std::string(kModel) + "/adapters/";
  EXPECT_TRUE(e.adapters().load("flood", adapters + "all7_r8", false).ok());
  EXPECT_TRUE(e.adapters().load("probe", adapters + "attn_r16_rslora", false).ok());

  uint64_t submitted = 0;
  std::map<uint64_t, int64_t> first_token_step;
  auto submit = [&](const std::string& task, std::vector<int32_t> prompt, int32_t max_tokens) {
    engine::GenerationRequest r = greedy_request(std::move(prompt), max_tokens, task);
    r.return_logits = false;
    const uint64_t index = submitted++;
    r.on_update = [&, index, task](const engine::SequenceUpdate& u) {
      auto& t = out.tokens[index];
      for (const auto& g : u.new_tokens) t.push_back(g.token_id);
      if (!u.new_tokens.empty() && !first_token_step.count(index))
        first_token_step[index] = static_cast<int64_t>(e.stats().steps);
      if (task == "flood") out.flood_tokens += u.new_tokens.size();
    };
    EXPECT_TRUE(e.submit(std::move(r)).ok());
    return index;
  };
  std::mt19937 rng(7);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int i = 0; i < kFlood; ++i) {
    std::vector<int32_t> p(static_cast<size_t>(uniform(4, 24)));
    for (auto& id : p) id = uniform(3, 255);
    submit("flood", std::move(p), uniform(32, kFloodOutputMax));
  }
  for (int s = 0; s < 5; ++s) EXPECT_TRUE(e.step().ok());
  for (int i = 0; i < kProbes; ++i) {
    std::vector<int32_t> p(8);
    for (auto& id : p) id = uniform(3, 255);
    const int64_t sent = static_cast<int64_t>(e.stats().steps);
    const uint64_t index = submit("probe", std::move(p), 8);
    while (out.tokens[index].size() < 8 && e.has_work()) EXPECT_TRUE(e.step().ok());
    out.probe_wait_steps.push_back(first_token_step[index] - sent);
  }
  EXPECT_TRUE(e.run_until_idle().ok());
  out.steps = e.stats().steps;
  return out;
}

TEST(FairScheduling, AFloodDelaysAnotherTasksFirstTokenByStepsNotByItsBacklog) {
  const PolicyRun vtc = run(engine::FairnessPolicy::kVtc);
  const PolicyRun fifo = run(engine::FairnessPolicy::kFifo);
  ASSERT_EQ(vtc.probe_wait_steps.size(), static_cast<size_t>(kProbes));
  ASSERT_EQ(fifo.probe_wait_steps.size(), static_cast<size_t>(kProbes));
  const int64_t vtc_worst =
      *std::max_element(vtc.probe_wait_steps.begin(), vtc.probe_wait_steps.end());
  const int64_t fifo_worst =
      *std::max_element(fifo.probe_wait_steps.begin(), fifo.probe_wait_steps.end());
  const double vtc_rate = static_cast<double>(vtc.flood_tokens) / static_cast<double>(vtc.steps);
  const double fifo_rate = static_cast<double>(fifo.flood_tokens) / static_cast<double>(fifo.steps);
  std::printf("probe's first token after (steps): VTC %s; FIFO %s\n",
              fmt::format("{}", fmt::join(vtc.probe_wait_steps, " ")).c_str(),
              fmt::format("{}", fmt::join(fifo.probe_wait_steps, " ")).c_str());
  std::printf("flood: VTC %.2f tokens/step over %llu steps, FIFO %.2f over %llu\n", vtc_rate,
              static_cast<unsigned long long>(vtc.steps), fifo_rate,
              static_cast<unsigned long long>(fifo.steps));
  // A probe starts at the first free slot after at most one flood request: within the longest
  // flood output (a slot frees by then) and its own prefill step.
  EXPECT_LE(vtc_worst, kFloodOutputMax + 1);
  // Under FIFO the first probe waits for the flood's backlog: before it starts, all but the last
  // 16 flood requests finish, each after at least 32 tokens in a batch of 16.
  EXPECT_GE(fifo_worst, (kFlood - 2 * kMaxBatchSize) * 32 / kMaxBatchSize);
  // The same batching of the flood either way.
  EXPECT_NEAR(vtc_rate, fifo_rate, 0.05 * fifo_rate);
  // Order never changes what a request generates.
  ASSERT_EQ(vtc.tokens.size(), static_cast<size_t>(kFlood + kProbes));
  EXPECT_TRUE(vtc.tokens == fifo.tokens);
}

}  // namespace
}  // namespace loraserve::testing
