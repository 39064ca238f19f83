// Text through the engine: streaming pieces that concatenate to the full decode, stop strings cut
// from the text (and never streamed, even in part), and text prompts. The model is a vocab-256
// fixture given a byte-level BPE tokenizer.json (one token per byte, GPT-2's byte alphabet).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "engine/loader.h"
#include "tests/reference/golden.h"

namespace loraserve::engine {
namespace {

namespace fs = std::filesystem;

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upwards.
std::string byte_char(int b) {
  std::vector<int> bs;
  for (int c = '!'; c <= '~'; ++c) bs.push_back(c);
  for (int c = 0xA1; c <= 0xAC; ++c) bs.push_back(c);
  for (int c = 0xAE; c <= 0xFF; ++c) bs.push_back(c);
  int code = -1, extra = 0;
  for (int x = 0; x < 256; ++x) {
    const bool printable = std::find(bs.begin(), bs.end(), x) != bs.end();
    const int cp = printable ? x : 256 + extra++;
    if (x == b) code = cp;
  }
  std::string out;
  if (code < 0x80) {
    out.push_back(static_cast<char>(code));
  } else {
    out.push_back(static_cast<char>(0xC0 | (code >> 6)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  }
  return out;
}

class TextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / fmt::format("loraserve_text_{:x}", rd());
    fs::create_directories(dir_);
    const fs::path fixture = fs::path(testing::kFixturesDir) / "llama_mha_f32";
    fs::copy_file(fixture / "config.json", dir_ / "config.json");
    fs::create_symlink(fs::absolute(fixture / "model.safetensors"), dir_ / "model.safetensors");
    nlohmann::json vocab = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
    nlohmann::json tok = {{"version", "1.0"},
                          {"added_tokens", nlohmann::json::array()},
                          {"normalizer", nullptr},
                          {"pre_tokenizer",
                           {{"type", "ByteLevel"},
                            {"add_prefix_space", false},
                            {"trim_offsets", true},
                            {"use_regex", true}}},
                          {"post_processor", nullptr},
                          {"decoder",
                           {{"type", "ByteLevel"},
                            {"add_prefix_space", true},
                            {"trim_offsets", true},
                            {"use_regex", true}}},
                          {"model",
                           {{"type", "BPE"},
                            {"dropout", nullptr},
                            {"unk_token", nullptr},
                            {"continuing_subword_prefix", nullptr},
                            {"end_of_word_suffix", nullptr},
                            {"fuse_unk", false},
                            {"byte_fallback", false},
                            {"vocab", vocab},
                            {"merges", nlohmann::json::array()}}}};
    std::ofstream(dir_ / "tokenizer.json") << tok.dump();
    kernels::BackendOptions bo;
    bo.device = "cpu";
    EngineOptions eo;
    eo.max_batch_size = 8;
    eo.max_batched_tokens = 128;
    auto e = open_engine(dir_.string(), bo, eo);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    engine_ = std::move(*e);
    ASSERT_NE(engine_->tokenizer(), nullptr);
  }
  void TearDown() override {
    engine_.reset();
    fs::remove_all(dir_);
  }

  struct Output {
    std::vector<int32_t> ids;
    std::vector<std::string> pieces;
    std::vector<int32_t> answer_tokens;  // of each update
    FinishReason reason = FinishReason::kNone;
  };
  Output run(GenerationRequest r) {
    auto out = std::make_shared<Output>();
    r.on_update = [out](const SequenceUpdate& u) {
      for (const auto& t : u.new_tokens) out->ids.push_back(t.token_id);
      out->pieces.push_back(u.new_text);
      out->answer_tokens.push_back(u.answer_tokens);
      if (u.finished) out->reason = u.finish_reason;
    };
    EXPECT_TRUE(engine_->submit(std::move(r)).ok());
    EXPECT_TRUE(engine_->run_until_idle().ok());
    return *out;
  }
  static GenerationRequest greedy(std::vector<int32_t> prompt, int32_t max_tokens) {
    GenerationRequest r;
    r.prompt_token_ids = std::move(prompt);
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    return r;
  }
  // The first two printable ASCII characters in a row past the start of `text` (an ASCII pair
  // cannot be half of a character the decoder holds back), or "".
  static std::string first_ascii_pair(const std::string& text) {
    for (size_t at = 4; at + 1 < text.size(); ++at) {
      if (std::isprint(static_cast<unsigned char>(text[at])) &&
          std::isprint(static_cast<unsigned char>(text[at + 1])))
        return text.substr(at, 2);
    }
    return "";
  }
  static std::string join(const std::vector<std::string>& pieces) {
    std::string s;
    for (const auto& p : pieces) s += p;
    return s;
  }

  fs::path dir_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(TextTest, PiecesConcatenateToTheFullDecode) {
  auto prompt = engine_->tokenizer()->encode("Hello, LoRA!", false);
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(prompt->size(), 12u);
  Output out = run(greedy(*prompt, 32));
  ASSERT_EQ(out.ids.size(), 32u);
  auto full = engine_->tokenizer()->decode(out.ids, true);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(join(out.pieces), *full);
  EXPECT_EQ(out.reason, FinishReason::kLength);
}

// (With include_stop_str_in_output, right after it.)
TEST_F(TextTest, StopStringEndsTheTextBeforeItAndIsNeverStreamed) {
  const std::vector<int32_t> prompt = {72, 101, 108, 108, 111, 32, 76, 111};
  Output free_run = run(greedy(prompt, 32));
  const std::string full = join(free_run.pieces);
  // A stop string taken from the middle of the free run.
  const std::string stop = first_ascii_pair(full);
  ASSERT_FALSE(stop.empty()) << "the free run has no two ASCII characters in a row: " << full;
  const size_t first = full.find(stop);
  GenerationRequest r = greedy(prompt, 32);
  r.params.stop = {stop, "a stop string that never occurs"};
  Output out = run(std::move(r));
  EXPECT_EQ(out.reason, FinishReason::kStop);
  EXPECT_EQ(join(out.pieces), full.substr(0, first));
  // Generation stopped at the token that completed the stop string.
  size_t k = 0;
  while (k < free_run.ids.size() &&
         engine_->tokenizer()->decode(std::span(free_run.ids).first(k), true)->find(stop) ==
             std::string::npos) {
    ++k;
  }
  EXPECT_EQ(out.ids, std::vector<int32_t>(free_run.ids.begin(),
                                          free_run.ids.begin() + static_cast<std::ptrdiff_t>(k)));
  for (const auto& piece : out.pieces) EXPECT_EQ(piece.find(stop), std::string::npos);

  // include_stop_str_in_output (vLLM's): the same tokens, and the text ends right after the stop
  // string; the token that completed it holds its last character, so it is part of the answer.
  GenerationRequest kept = greedy(prompt, 32);
  kept.params.stop = {stop};
  kept.params.include_stop_str_in_output = true;
  const Output with = run(std::move(kept));
  EXPECT_EQ(with.reason, FinishReason::kStop);
  EXPECT_EQ(with.ids, out.ids);
  EXPECT_EQ(join(with.pieces), full.substr(0, first + stop.size()));
  EXPECT_EQ(with.answer_tokens.back(), static_cast<int32_t>(with.ids.size()));
}

// With min_tokens, stop strings count once the output has more than min_tokens tokens (vLLM's
// rule): one completed by token k stops a request with min_tokens k - 1, not one with k.
TEST_F(TextTest, StopStringsCountOnlyPastMinTokens) {
  const std::vector<int32_t> prompt = {72, 101, 108, 108, 111, 32, 76, 111};
  Output free_run = run(greedy(prompt, 32));
  const std::string full = join(free_run.pieces);
  // Two printable ASCII characters in a row that occur once in the free run.
  std::string stop;
  for (size_t at = 4; at + 1 < full.size() && stop.empty(); ++at) {
    const std::string pair = full.substr(at, 2);
    if (std::isprint(static_cast<unsigned char>(pair[0])) &&
        std::isprint(static_cast<unsigned char>(pair[1])) && full.find(pair) == at &&
        full.find(pair, at + 1) == std::string::npos)
      stop = pair;
  }
  ASSERT_FALSE(stop.empty()) << "no ASCII pair occurs once in the free run: " << full;
  int32_t k = 0;  // the tokens whose text first holds the stop string
  while (engine_->tokenizer()->decode(std::span(free_run.ids).first(k), true)->find(stop) ==
         std::string::npos)
    ++k;
  GenerationRequest held = greedy(prompt, 32);
  held.params.stop = {stop};
  held.params.min_tokens = k;
  Output out = run(std::move(held));
  EXPECT_EQ(out.reason, FinishReason::kLength);
  EXPECT_EQ(out.ids, free_run.ids);
  EXPECT_EQ(join(out.pieces), full);  // the stop string stays in the text

  GenerationRequest counted = greedy(prompt, 32);
  counted.params.stop = {stop};
  counted.params.min_tokens = k - 1;
  out = run(std::move(counted));
  EXPECT_EQ(out.reason, FinishReason::kStop);
  EXPECT_EQ(out.ids.size(), static_cast<size_t>(k));
  EXPECT_EQ(join(out.pieces), full.substr(0, full.find(stop)));
}

// A stop token id ends the request without adding its text (as vLLM leaves it out), and the
// answer's tokens (what OpenAI logprobs cover) are those before it; with
// include_stop_str_in_output, its text and itself are in.
TEST_F(TextTest, AStopTokenAddsNoText) {
  const std::vector<int32_t> prompt = {72, 101, 108, 108, 111, 32, 76, 111};
  Output free_run = run(greedy(prompt, 32));
  // An ASCII token past the start whose first occurrence follows an ASCII token.
  size_t k = 1;
  auto ascii = [](int32_t id) { return id > 0x20 && id < 0x7f; };
  while (k < free_run.ids.size() &&
         !(ascii(free_run.ids[k]) && ascii(free_run.ids[k - 1]) &&
           std::find(free_run.ids.begin(), free_run.ids.begin() + static_cast<std::ptrdiff_t>(k),
                     free_run.ids[k]) == free_run.ids.begin() + static_cast<std::ptrdiff_t>(k)))
    ++k;
  ASSERT_LT(k, free_run.ids.size()) << "no fitting stop token in the free run";
  GenerationRequest r = greedy(prompt, 32);
  r.params.stop_token_ids = {free_run.ids[k]};
  Output out = run(std::move(r));
  EXPECT_EQ(out.reason, FinishReason::kStop);
  ASSERT_EQ(out.ids.size(), k + 1);  // the stop token is generated (and counted)
  const std::vector<int32_t> before(out.ids.begin(),
                                    out.ids.begin() + static_cast<std::ptrdiff_t>(k));
  EXPECT_EQ(join(out.pieces), *engine_->tokenizer()->decode(before, true));
  EXPECT_EQ(out.answer_tokens.back(), static_cast<int32_t>(k));
  // While it ran, the count never went back and never passed the tokens seen.
  for (size_t i = 1; i < out.answer_tokens.size(); ++i)
    EXPECT_GE(out.answer_tokens[i], out.answer_tokens[i - 1]);

  // With include_stop_str_in_output (vLLM's), the stop token's text is kept and it is one of the
  // answer's tokens.
  GenerationRequest kept = greedy(prompt, 32);
  kept.params.stop_token_ids = {free_run.ids[k]};
  kept.params.include_stop_str_in_output = true;
  out = run(std::move(kept));
  EXPECT_EQ(out.reason, FinishReason::kStop);
  ASSERT_EQ(out.ids.size(), k + 1);
  EXPECT_EQ(join(out.pieces), *engine_->tokenizer()->decode(out.ids, true));
  EXPECT_NE(join(out.pieces), *engine_->tokenizer()->decode(before, true));
  EXPECT_EQ(out.answer_tokens.back(), static_cast<int32_t>(k + 1));
}

// gRPC cancels a call when its deadline passes, which can reach the engine before the engine's
// own deadline check: such a cancel ends the request as kDeadline.
TEST_F(TextTest, ACancelPastTheDeadlineIsTheDeadline) {
  for (const bool past : {true, false}) {
    SCOPED_TRACE(past ? "deadline passed" : "deadline ahead");
    GenerationRequest r = greedy({5, 6, 7}, 8);
    r.deadline = std::chrono::steady_clock::now() +
                 (past ? std::chrono::milliseconds(1) : std::chrono::milliseconds(60000));
    auto out = std::make_shared<Output>();
    r.on_update = [out](const SequenceUpdate& u) {
      if (u.finished) out->reason = u.finish_reason;
    };
    auto id = engine_->submit(std::move(r));
    ASSERT_TRUE(id.ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    engine_->cancel(*id);
    ASSERT_TRUE(engine_->run_until_idle().ok());
    EXPECT_EQ(out->reason, past ? FinishReason::kDeadline : FinishReason::kCancelled);
  }
}

TEST_F(TextTest, StopStringsNeedNonEmptyText) {
  GenerationRequest r = greedy({5, 6, 7}, 4);
  r.params.stop = {""};
  auto st = engine_->submit(std::move(r));
  EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.status().message().find("stop[0]"), std::string::npos);
}

}  // namespace
}  // namespace loraserve::engine
