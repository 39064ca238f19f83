#include "engine/request_limits.h"

#include <gtest/gtest.h>

#include <string>

namespace loraserve::engine {
namespace {

GenerationRequest request() {
  GenerationRequest r;
  r.task_id = "t0";
  r.request_id = "req-1";
  r.prompt_token_ids = {5, 6};
  return r;
}

TEST(RequestLimits, DefaultsAreValidAndLetAnOrdinaryRequestThrough) {
  const RequestLimits limits;
  EXPECT_TRUE(limits.validate().ok());
  EXPECT_TRUE(limits.check_request(request()).ok());
  EXPECT_EQ(limits.max_logprobs, kMaxLogprobs);
  EXPECT_EQ(limits.max_task_id_length, adapters::AdapterRegistry::kMaxTaskIdLength);
  GenerationRequest base = request();
  base.task_id.clear();  // the base model
  EXPECT_TRUE(limits.check_request(base).ok());
}

TEST(RequestLimits, ValidateNamesTheFlagOutOfRange) {
  RequestLimits l;
  l.max_logprobs = kMaxLogprobs + 1;
  Status st = l.validate();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--max-logprobs"), std::string::npos) << st.message();
  l = RequestLimits();
  l.max_task_id_length = 129;
  EXPECT_NE(l.validate().message().find("--max-task-id-length"), std::string::npos);
  l = RequestLimits();
  l.max_stop_bytes = 0;
  EXPECT_NE(l.validate().message().find("--max-stop-bytes"), std::string::npos);
}

TEST(RequestLimits, TaskIdLengthIsCheckedFirstAndNeverEchoed) {
  RequestLimits l;
  l.max_task_id_length = 8;
  const std::string long_id(1 << 20, 'a');
  Status st = l.check_task_id(long_id);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "task_id has 1048576 bytes; at most 8 (--max-task-id-length)");
  EXPECT_TRUE(l.check_task_id("abcdefgh").ok());
  EXPECT_FALSE(l.check_task_id("abcdefghi").ok());
  // A long ID with bad characters is refused for its length, before its characters are read.
  EXPECT_EQ(l.check_task_id(std::string(100, '!')).message(),
            "task_id has 100 bytes; at most 8 (--max-task-id-length)");
  st = l.check_task_id("a b");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("task_id"), std::string::npos) << st.message();
  EXPECT_EQ(l.check_task_id("").code(), StatusCode::kInvalidArgument);
  // Another field name for front ends that call it differently.
  st = l.check_task_id(long_id, "task");
  EXPECT_EQ(st.message(), "task has 1048576 bytes; at most 8 (--max-task-id-length)");
  EXPECT_NE(l.check_task_id("a b", "model").message().find("model"), std::string::npos);
  for (const char* ok : {"a", "T-1.2_x:", "0"}) EXPECT_TRUE(l.check_task_id(ok).ok()) << ok;
}

TEST(RequestLimits, RequestIdIsBoundedAndHasNoControlCharacters) {
  RequestLimits l;
  l.max_request_id_bytes = 16;
  EXPECT_TRUE(l.check_request_id("").ok());
  EXPECT_TRUE(l.check_request_id("héllo wörld").ok());
  Status st = l.check_request_id(std::string(17, 'r'));
  EXPECT_EQ(st.message(), "request_id has 17 bytes; at most 16 (--max-request-id-bytes)");
  st = l.check_request_id("a\nb");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "request_id holds the control character 0x0a at byte 1 (it goes into the request "
            "log)");
  EXPECT_FALSE(l.check_request_id(std::string("a\x7f", 2)).ok());
  EXPECT_FALSE(l.check_request_id(std::string("a\0", 2)).ok());
}

TEST(RequestLimits, StopStringsStopIdsAndLogprobsAreBounded) {
  RequestLimits l;
  l.max_stop_strings = 2;
  l.max_stop_bytes = 4;
  l.max_stop_token_ids = 3;
  l.max_logprobs = 5;
  GenerationRequest r = request();
  r.params.stop = {"ab", "abcd"};
  r.params.stop_token_ids = {1, 2, 3};
  r.params.logprobs = 5;
  EXPECT_TRUE(l.check_request(r).ok());

  r.params.stop = {"a", "b", "c"};
  EXPECT_EQ(l.check_request(r).message(), "stop has 3 strings; at most 2 (--max-stop-strings)");
  r.params.stop = {"a", std::string(1000, 'x')};
  EXPECT_EQ(l.check_request(r).message(), "stop[1] has 1000 bytes; at most 4 (--max-stop-bytes)");
  r.params.stop = {};
  r.params.stop_token_ids = {1, 2, 3, 4};
  EXPECT_EQ(l.check_request(r).message(),
            "stop_token_ids has 4 ids; at most 3 (--max-stop-token-ids)");
  r.params.stop_token_ids = {};
  r.params.logprobs = 6;
  EXPECT_EQ(l.check_request(r).message(), "logprobs must be in [0, 5], got 6 (--max-logprobs)");
  r.params.logprobs = -1;
  EXPECT_EQ(l.check_request(r).code(), StatusCode::kInvalidArgument);
}

TEST(RequestLimits, TheTaskIdIsCheckedBeforeTheRest) {
  RequestLimits l;
  GenerationRequest r = request();
  r.task_id = std::string(200, 't');
  r.request_id = std::string(1000, 'r');
  r.params.logprobs = 99;
  EXPECT_NE(l.check_request(r).message().find("task_id"), std::string::npos);
}

TEST(RequestLimits, PromptTextAndLength) {
  RequestLimits l;
  Status st = l.check_prompt_text("");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("prompt"), std::string::npos);
  EXPECT_TRUE(l.check_prompt_text(" ").ok());
  EXPECT_TRUE(l.check_prompt_tokens(1'000'000).ok());  // 0: the engine checks the context
  l.max_prompt_tokens = 10;
  EXPECT_TRUE(l.check_prompt_tokens(10).ok());
  EXPECT_EQ(l.check_prompt_tokens(11).message(),
            "prompt has 11 tokens; at most 10 (--max-prompt-tokens)");
}

}  // namespace
}  // namespace loraserve::engine
