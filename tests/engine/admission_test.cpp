// Admission on its own: the request checks and their messages, the queue limit, and the order
// in which waiting requests start (arrival order, preempted ones first, requests whose adapter
// is not ready passed over, the first one that does not fit the KV cache stopping the rest).
#include "engine/admission.h"

#include <gtest/gtest.h>

#include <memory>
#include <set>

namespace loraserve::engine {
namespace {

AdmissionLimits limits() {
  AdmissionLimits l;
  l.vocab_size = 100;
  l.max_context = 64;
  l.default_max_tokens = 16;
  l.has_tokenizer = true;
  l.kv_blocks = 8;
  l.kv_block_size = 4;
  return l;
}

GenerationRequest request(size_t prompt_len) {
  GenerationRequest r;
  r.prompt_token_ids.assign(prompt_len, 5);
  return r;
}

TEST(ValidateRequest, ResolvesMaxTokens) {
  EXPECT_EQ(*validate_request(request(10), limits()), 16);
  AdmissionLimits l = limits();
  l.kv_blocks = 100;
  EXPECT_EQ(*validate_request(request(60), l), 4);  // the default, capped by the context
  GenerationRequest r = request(10);
  r.params.max_tokens = 3;
  EXPECT_EQ(*validate_request(r, limits()), 3);
}

TEST(ValidateRequest, NamesTheFieldAtFault) {
  auto code = [](const GenerationRequest& r) { return validate_request(r, limits()).status(); };
  EXPECT_EQ(code(request(0)).message(), "prompt is empty");
  GenerationRequest r = request(3);
  r.prompt_token_ids[1] = 100;
  EXPECT_NE(code(r).message().find("at index 1"), std::string::npos);
  EXPECT_NE(code(request(64)).message().find("context holds 64"), std::string::npos);
  r = request(3);
  r.params.temperature = -1;
  EXPECT_NE(code(r).message().find("temperature"), std::string::npos);
  r = request(3);
  r.params.top_p = 0;
  EXPECT_NE(code(r).message().find("top_p"), std::string::npos);
  r = request(3);
  r.params.stop = {"ok", ""};
  EXPECT_EQ(code(r).message(), "stop[1] is an empty string");
  for (const Status& st : {code(request(0)), code(r)})
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  AdmissionLimits no_tokenizer = limits();
  no_tokenizer.has_tokenizer = false;
  r.params.stop = {"x"};
  EXPECT_NE(validate_request(r, no_tokenizer).status().message().find("tokenizer"),
            std::string::npos);
}

TEST(ValidateRequest, ARequestThatCanNeverFitTheCacheIsResourceExhausted) {
  GenerationRequest r = request(20);
  r.params.max_tokens = 13;  // 33 tokens: 9 blocks of 4, the cache has 8
  const Status st = validate_request(r, limits()).status();
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("needs 9 KV blocks; the whole cache has 8"), std::string::npos);
  r.params.max_tokens = 12;
  EXPECT_TRUE(validate_request(r, limits()).ok());
}

TEST(ValidateRequest, TheRequestLimitsComeFirstTheTaskIdBeforeAnything) {
  AdmissionLimits l = limits();
  l.request.max_prompt_tokens = 5;
  GenerationRequest r = request(0);
  r.task_id = std::string(1000, 't');
  r.params.temperature = -1;
  EXPECT_EQ(validate_request(r, l).status().message(),
            "task_id has 1000 bytes; at most 128 (--max-task-id-length)");
  EXPECT_EQ(validate_request(request(6), l).status().message(),
            "prompt has 6 tokens; at most 5 (--max-prompt-tokens)");
  EXPECT_TRUE(validate_request(request(5), l).ok());
  r = request(3);
  r.params.logprobs = kMaxLogprobs + 1;
  EXPECT_NE(validate_request(r, l).status().message().find("--max-logprobs"), std::string::npos);
}

TEST(QueueLimits, RefusesPastTheLimitAndTakesBackReleasedPlaces) {
  QueueLimits q(2);
  EXPECT_TRUE(q.reserve().ok());
  EXPECT_TRUE(q.reserve().ok());
  const Status full = q.reserve();
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("max_queue"), std::string::npos);
  EXPECT_EQ(q.held(), 2);
  q.release();
  EXPECT_TRUE(q.reserve().ok());
}

class AdmissionTest : public ::testing::Test {
 protected:
  AdmissionTest()
      : kv_(4, 4), admission_(&kv_, [this](Sequence* s) { return !not_ready_.count(s->id); }) {}
  Sequence* make(int32_t tokens) {
    auto s = std::make_unique<Sequence>();
    s->id = seqs_.size() + 1;
    s->tokens.assign(static_cast<size_t>(tokens), 1);
    s->prompt_len = tokens;
    seqs_.push_back(std::move(s));
    return seqs_.back().get();
  }
  BlockAllocator kv_;
  Admission admission_;
  std::vector<std::unique_ptr<Sequence>> seqs_;
  std::set<uint64_t> not_ready_;
};

TEST_F(AdmissionTest, ArrivalOrderWithPreemptedSequencesFirst) {
  Sequence* a = make(1);
  Sequence* b = make(1);
  Sequence* c = make(1);
  admission_.add(a);
  admission_.add(b);
  admission_.requeue(c);
  EXPECT_EQ(admission_.num_waiting(), 3u);
  EXPECT_EQ(admission_.admit(), c);
  EXPECT_EQ(admission_.admit(), a);
  EXPECT_EQ(admission_.admit(), b);
  EXPECT_EQ(admission_.admit(), nullptr);
  EXPECT_EQ(kv_.num_free(), 1);
  EXPECT_EQ(a->blocks.size(), 1u);
}

TEST_F(AdmissionTest, AdmitsWithBlocksForEveryTokenOrStops) {
  Sequence* big = make(9);  // 3 blocks
  Sequence* small = make(1);
  Sequence* later = make(8);
  admission_.add(big);
  admission_.add(later);
  admission_.add(small);
  EXPECT_EQ(admission_.admit(), big);
  EXPECT_EQ(big->blocks.size(), 3u);
  // later needs 2 blocks, 1 is free: admission stops; small, behind it, waits too.
  EXPECT_EQ(admission_.admit(), nullptr);
  EXPECT_EQ(admission_.num_waiting(), 2u);
  kv_.free_all(&big->blocks);
  EXPECT_EQ(admission_.admit(), later);
  EXPECT_EQ(admission_.admit(), small);
}

TEST_F(AdmissionTest, ARequestWaitingForItsAdapterNeverHoldsUpTheOthers) {
  Sequence* a = make(1);
  Sequence* b = make(1);
  admission_.add(a);
  admission_.add(b);
  not_ready_.insert(a->id);
  EXPECT_EQ(admission_.admit(), b);
  EXPECT_EQ(admission_.admit(), nullptr);
  not_ready_.clear();
  EXPECT_EQ(admission_.admit(), a);
}

TEST_F(AdmissionTest, RemoveTakesAWaitingSequenceOut) {
  Sequence* a = make(1);
  Sequence* b = make(1);
  admission_.add(a);
  admission_.add(b);
  admission_.remove(a);
  EXPECT_EQ(admission_.num_waiting(), 1u);
  EXPECT_EQ(admission_.admit(), b);
  EXPECT_EQ(admission_.admit(), nullptr);
}

}  // namespace
}  // namespace loraserve::engine
