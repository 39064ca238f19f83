// Stop conditions: EOS, stop ids and length in their order of precedence, and the stop-string
// matcher on text that grows piece by piece (earliest match wins, a match may span pieces, and a
// tail that may still begin a stop string is held back, never more).
#include "engine/stop_conditions.h"

#include <gtest/gtest.h>

#include "engine/sequence.h"

namespace loraserve::engine {
namespace {

Sequence sequence(std::vector<int32_t> prompt, int32_t max_tokens) {
  Sequence s;
  s.tokens = std::move(prompt);
  s.prompt_len = static_cast<int32_t>(s.tokens.size());
  s.max_tokens = max_tokens;
  return s;
}

TEST(TokenStopReason, EosThenStopIdsThenLength) {
  const std::vector<int32_t> eos = {2, 7};
  Sequence s = sequence({5, 5, 5}, 2);
  s.request.params.stop_token_ids = {9, 7};
  s.tokens.push_back(4);
  EXPECT_EQ(token_stop_reason(s, 4, eos, 100), FinishReason::kNone);
  s.tokens.push_back(7);  // EOS and a stop id, and max_tokens reached: EOS wins
  EXPECT_EQ(token_stop_reason(s, 7, eos, 100), FinishReason::kEos);
  EXPECT_EQ(token_stop_reason(s, 9, eos, 100), FinishReason::kStop);  // stop id before length
  EXPECT_EQ(token_stop_reason(s, 4, eos, 100), FinishReason::kLength);
  s.request.params.ignore_eos = true;
  EXPECT_EQ(token_stop_reason(s, 7, eos, 100), FinishReason::kStop);
  EXPECT_EQ(token_stop_reason(s, 2, eos, 100), FinishReason::kLength);
}

TEST(TokenStopReason, AFullContextEndsWithLength) {
  Sequence s = sequence({1, 1, 1}, 50);
  s.tokens.push_back(3);
  EXPECT_EQ(token_stop_reason(s, 3, {}, 5), FinishReason::kNone);
  s.tokens.push_back(3);
  EXPECT_EQ(token_stop_reason(s, 3, {}, 5), FinishReason::kLength);
}

// [begin, end) of a match, or {npos, npos}.
std::pair<size_t, size_t> found(const StopStringMatcher::Match& m) { return {m.begin, m.end}; }
std::pair<size_t, size_t> range(size_t begin, size_t end) { return {begin, end}; }
const std::pair<size_t, size_t> kNone = range(std::string::npos, std::string::npos);

TEST(StopStringMatcher, FindsTheEarliestStopThatEndsInTheNewText) {
  const StopStringMatcher m({"END", "X"});
  EXPECT_FALSE(m.empty());
  EXPECT_EQ(found(m.find("abc", 0)), kNone);
  EXPECT_FALSE(m.find("abc", 0).found());
  EXPECT_EQ(found(m.find("abcXdef END", 3)), range(3, 4));
  EXPECT_EQ(found(m.find("abc ENDdefX", 3)), range(4, 7));
  // A stop string split over two pieces: "EN" arrived before, "D" now.
  EXPECT_EQ(found(m.find("abc END", 6)), range(4, 7));
  // Only stops that end past old_size are searched: the text before was searched already.
  EXPECT_EQ(found(m.find("X is old", 5)), kNone);
}

// Two stop strings that begin at the same byte: the longer one ends the match, whichever comes
// first in the list (it matters when the text keeps the stop string).
TEST(StopStringMatcher, OfTwoStopsAtOneByteTheLongerEndsTheMatch) {
  for (const auto& stops : {std::vector<std::string>{"ab", "abc"}, {"abc", "ab"}}) {
    const StopStringMatcher m(stops);
    EXPECT_EQ(found(m.find("xxabcd", 0)), range(2, 5));
  }
  // An earlier begin wins over a longer match.
  const StopStringMatcher m({"bcd", "abc"});
  EXPECT_EQ(found(m.find("xabcd", 0)), range(1, 4));
}

TEST(StopStringMatcher, HoldsBackTheLongestTailThatBeginsAStop) {
  const StopStringMatcher m({"</s>", "stop!"});
  EXPECT_EQ(m.pending_tail("hello"), 0u);
  EXPECT_EQ(m.pending_tail("hello <"), 1u);
  EXPECT_EQ(m.pending_tail("hello </"), 2u);
  EXPECT_EQ(m.pending_tail("hello </s"), 3u);
  EXPECT_EQ(m.pending_tail("a sto"), 3u);
  EXPECT_EQ(m.pending_tail("a stop"), 4u);
  EXPECT_EQ(m.pending_tail("<x"), 0u);  // "<x" begins no stop string
  EXPECT_EQ(m.pending_tail(""), 0u);
  // A whole stop string is a match, not a pending tail (find reports it).
  EXPECT_EQ(m.pending_tail("stop!"), 0u);
}

TEST(StopStringMatcher, RepeatedCharactersHoldBackOnlyWhatCanStillMatch) {
  const StopStringMatcher m({"aab"});
  EXPECT_EQ(m.pending_tail("xaa"), 2u);
  EXPECT_EQ(m.pending_tail("xaaa"), 2u);  // "aaa" cannot begin "aab", its last "aa" can
  EXPECT_EQ(found(m.find("xaaab", 4)), range(2, 5));
}

TEST(StopStringMatcher, NoStopStringsMatchNothing) {
  const StopStringMatcher m;
  EXPECT_TRUE(m.empty());
  EXPECT_FALSE(m.find("anything", 0).found());
  EXPECT_EQ(m.pending_tail("anything"), 0u);
}

}  // namespace
}  // namespace loraserve::engine
