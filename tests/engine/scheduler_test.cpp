// Step planning on synthetic queues (no model, no backend): running sequences first in admission
// order, prompts chunked to the row budget, the sequence budget, whole-prompt KV admission in
// arrival order, adapters that are not ready passed over, preemption of the most recently
// admitted sequence (which waits again in front, its blocks freed), and removal.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <memory>
#include <set>

namespace loraserve::engine {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  void make(int32_t blocks, int32_t block_size, int32_t max_batch_size, int32_t max_rows) {
    kv_ = std::make_unique<BlockAllocator>(blocks, block_size);
    admission_ = std::make_unique<Admission>(
        kv_.get(), [this](Sequence* s) { return not_ready_.count(s->id) == 0; });
    scheduler_ = std::make_unique<Scheduler>(SchedulerOptions{max_batch_size, max_rows}, kv_.get(),
                                             admission_.get());
  }
  Sequence* add(int32_t prompt_len, int32_t max_tokens = 100) {
    auto s = std::make_unique<Sequence>();
    s->id = seqs_.size() + 1;
    s->tokens.assign(static_cast<size_t>(prompt_len), 1);
    s->prompt_len = prompt_len;
    s->max_tokens = max_tokens;
    scheduler_->add(s.get());
    seqs_.push_back(std::move(s));
    return seqs_.back().get();
  }
  // Plans a step and applies it as the engine would: rows computed, one token per sampling
  // chunk; a sequence with max_tokens tokens ends.
  StepPlan step() {
    StepPlan plan = scheduler_->plan();
    std::vector<Sequence*> done;
    for (const ScheduledChunk& ch : plan.chunks) {
      const bool samples = ch.samples();
      ch.seq->num_computed += ch.num_tokens;
      if (!samples) continue;
      ch.seq->tokens.push_back(2);
      if (ch.seq->num_generated() >= ch.seq->max_tokens) done.push_back(ch.seq);
    }
    for (Sequence* s : done) scheduler_->remove(s);
    return plan;
  }
  static std::vector<std::pair<uint64_t, int32_t>> rows(const StepPlan& plan) {
    std::vector<std::pair<uint64_t, int32_t>> out;
    for (const auto& ch : plan.chunks) out.emplace_back(ch.seq->id, ch.num_tokens);
    return out;
  }
  using Rows = std::vector<std::pair<uint64_t, int32_t>>;

  std::unique_ptr<BlockAllocator> kv_;
  std::unique_ptr<Admission> admission_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::unique_ptr<Sequence>> seqs_;
  std::set<uint64_t> not_ready_;
};

TEST_F(SchedulerTest, RunningFirstThenArrivalsWithinTheRowBudget) {
  make(64, 4, 8, 10);
  add(3);
  add(12);
  add(2);
  // Step 1: 3 rows of the first prompt, then 7 of the second (a chunk), no room for the third.
  EXPECT_EQ(rows(step()), (Rows{{1, 3}, {2, 7}}));
  // Step 2: the first decodes, the second finishes its prompt, the third is admitted whole.
  EXPECT_EQ(rows(step()), (Rows{{1, 1}, {2, 5}, {3, 2}}));
  EXPECT_EQ(rows(step()), (Rows{{1, 1}, {2, 1}, {3, 1}}));
  EXPECT_EQ(scheduler_->num_running(), 3u);
  EXPECT_EQ(admission_->num_waiting(), 0u);
}

TEST_F(SchedulerTest, TheSequenceBudgetCapsRowsPerStep) {
  make(64, 4, 2, 100);
  add(2);
  add(2);
  add(2);
  EXPECT_EQ(rows(step()), (Rows{{1, 2}, {2, 2}}));
  EXPECT_EQ(rows(step()), (Rows{{1, 1}, {2, 1}}));
  EXPECT_EQ(admission_->num_waiting(), 1u);
}

TEST_F(SchedulerTest, APromptStartsOnlyWhenTheCacheHoldsAllOfItAndNothingOvertakesIt) {
  make(4, 4, 8, 100);
  Sequence* a = add(10, 2);  // 3 blocks
  add(8);                    // 2 blocks: does not fit beside a
  add(1);                    // 1 block: would fit, but arrived after the one that waits
  EXPECT_EQ(rows(step()), (Rows{{1, 10}}));
  EXPECT_EQ(a->blocks.size(), 3u);
  EXPECT_EQ(kv_->num_free(), 1);
  EXPECT_EQ(rows(step()), (Rows{{1, 1}}));  // a's next row still fits its 3 blocks
  // a ended (2 tokens): its blocks came back and both others start.
  EXPECT_EQ(a->blocks.size(), 0u);
  EXPECT_EQ(rows(step()), (Rows{{2, 8}, {3, 1}}));
}

TEST_F(SchedulerTest, ARequestWhoseAdapterIsNotReadyIsPassedOver) {
  make(64, 4, 8, 100);
  Sequence* a = add(3);
  add(3);
  not_ready_.insert(a->id);
  EXPECT_EQ(rows(step()), (Rows{{2, 3}}));
  EXPECT_EQ(rows(step()), (Rows{{2, 1}}));
  not_ready_.clear();
  EXPECT_EQ(rows(step()), (Rows{{2, 1}, {1, 3}}));
}

TEST_F(SchedulerTest, PreemptsTheMostRecentlyAdmittedWhichWaitsInFront) {
  make(4, 2, 8, 100);
  Sequence* a = add(2);  // 1 block each; a decode past 2 tokens needs a second block
  Sequence* b = add(2);
  Sequence* c = add(2);
  Sequence* d = add(2);
  Sequence* e = add(2);  // waits: 4 blocks, 4 sequences
  EXPECT_EQ(rows(step()), (Rows{{1, 2}, {2, 2}, {3, 2}, {4, 2}}));
  EXPECT_EQ(kv_->num_free(), 0);
  // Every sequence now has 3 tokens and needs a second block: a takes d's (d preempted), then
  // b takes c's (c preempted). c was preempted last: it waits in front of d, and both before e.
  const StepPlan plan = step();
  EXPECT_EQ(rows(plan), (Rows{{1, 1}, {2, 1}}));
  EXPECT_EQ(plan.preempted, (std::vector<Sequence*>{d, c}));
  EXPECT_EQ(c->num_computed, 0);
  EXPECT_TRUE(c->blocks.empty());
  EXPECT_EQ(c->preemptions, 1);
  EXPECT_EQ(c->tokens.size(), 3u);  // kept: recomputed from its tokens later
  ASSERT_EQ(admission_->waiting().size(), 3u);
  EXPECT_EQ(admission_->waiting()[0], c);
  EXPECT_EQ(admission_->waiting()[1], d);
  EXPECT_EQ(admission_->waiting()[2], e);
  EXPECT_EQ(a->blocks.size(), 2u);
  EXPECT_EQ(b->blocks.size(), 2u);
}

TEST_F(SchedulerTest, ASequenceThatCannotGrowAndWasAdmittedLastWaitsAgainItself) {
  make(2, 2, 8, 100);
  Sequence* a = add(1);  // after its first token: 2 tokens, still one block
  Sequence* b = add(2);  // after its first token: 3 tokens, needs a second block
  step();
  const StepPlan plan = step();
  EXPECT_EQ(rows(plan), (Rows{{1, 1}}));
  EXPECT_EQ(plan.preempted, (std::vector<Sequence*>{b}));
  EXPECT_EQ(a->blocks.size(), 1u);
  EXPECT_TRUE(b->blocks.empty());
  EXPECT_EQ(admission_->waiting().front(), b);
}

TEST_F(SchedulerTest, RemoveFreesTheBlocksOfARunningOrWaitingSequence) {
  make(8, 4, 8, 100);
  Sequence* a = add(8);
  Sequence* b = add(40);  // 10 blocks: never fits, waits
  step();
  EXPECT_EQ(kv_->num_free(), 6);
  scheduler_->remove(a);
  EXPECT_EQ(kv_->num_free(), 8);
  EXPECT_EQ(scheduler_->num_running(), 0u);
  scheduler_->remove(b);
  EXPECT_EQ(admission_->num_waiting(), 0u);
  EXPECT_TRUE(step().chunks.empty());
}

}  // namespace
}  // namespace loraserve::engine
