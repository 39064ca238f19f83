// Text in, text out through a real server: the fixture model with a byte-level tokenizer.json
// (token id b is byte b). Text prompts are tokenized, streamed text concatenates to the unary
// text (and to the tokenizer's decode of the ids), stop strings end generation and are not
// returned, Tokenize encodes, malformed UTF-8 is INVALID_ARGUMENT.
#include <gtest/gtest.h>

#include "client/client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"
#include "tokenizer/tokenizer.h"

namespace loraserve::testing {
namespace {

class TextTest : public ServerSuite<TextTest> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    model_ = make_model_with_tokenizer(dir_->path() / "model");
    start_suite_server({"--model", model_.string()});
    if (server_ == nullptr) return;
    auto tok = tokenizer::Tokenizer::from_file((model_ / "tokenizer.json").string());
    ASSERT_TRUE(tok.ok()) << tok.status().to_string();
    tokenizer_ = tok->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
    ServerSuite::TearDownTestSuite();
  }

  static v1::GenerateRequest text_request(const std::string& text, int32_t max_tokens) {
    v1::GenerateRequest r;
    r.set_text(text);
    r.mutable_params()->set_max_tokens(max_tokens);
    r.mutable_params()->set_temperature(0.0f);
    r.mutable_params()->set_ignore_eos(true);
    return r;
  }

  static fs::path model_;
  static tokenizer::Tokenizer* tokenizer_;
};

fs::path TextTest::model_;
tokenizer::Tokenizer* TextTest::tokenizer_ = nullptr;

TEST_F(TextTest, TokenizeEncodesBytes) {
  auto ids = client_->tokenize("héllo", true);
  ASSERT_TRUE(ids.ok()) << ids.status().to_string();
  EXPECT_EQ(std::vector<int32_t>(ids->token_ids().begin(), ids->token_ids().end()),
            (std::vector<int32_t>{104, 0xc3, 0xa9, 108, 108, 111}));
}

TEST_F(TextTest, TextPromptMatchesItsTokenIds) {
  v1::GenerateRequest by_text = text_request("hello world", 12);
  v1::GenerateRequest by_ids = by_text;
  const std::string prompt = "hello world";
  for (unsigned char ch : prompt) by_ids.mutable_token_ids()->add_ids(ch);
  auto a = client_->generate(by_text);
  auto b = client_->generate(by_ids);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ(a->usage().prompt_tokens(), 11u);
  EXPECT_EQ(std::vector<int32_t>(a->token_ids().begin(), a->token_ids().end()),
            std::vector<int32_t>(b->token_ids().begin(), b->token_ids().end()));
  EXPECT_EQ(a->text(), b->text());
}

TEST_F(TextTest, StreamedTextConcatenatesToTheUnaryText) {
  const v1::GenerateRequest r = text_request("the quick brown fox", 48);
  auto whole = client_->generate(r);
  ASSERT_TRUE(whole.ok()) << whole.status().to_string();
  const std::vector<int32_t> ids(whole->token_ids().begin(), whole->token_ids().end());
  auto decoded = tokenizer_->decode(ids, true);
  ASSERT_TRUE(decoded.ok()) << decoded.status().to_string();
  EXPECT_EQ(whole->text(), *decoded);
  EXPECT_FALSE(whole->text().empty());

  std::string text;
  std::vector<int32_t> streamed;
  int messages = 0;
  const Status st = client_->generate_stream(r, [&](const v1::GenerateStreamResponse& m) {
    text += m.text();
    streamed.insert(streamed.end(), m.token_ids().begin(), m.token_ids().end());
    ++messages;
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_GE(messages, 2);
  EXPECT_EQ(streamed, ids);
  EXPECT_EQ(text, whole->text());
}

TEST_F(TextTest, StopStringEndsGenerationAndIsNotReturned) {
  auto whole = client_->generate(text_request("once upon a time", 48));
  ASSERT_TRUE(whole.ok()) << whole.status().to_string();
  const std::string& t = whole->text();
  // A stop string taken from the middle of the greedy output: one whole UTF-8 character.
  size_t at = t.size() / 2;
  while (at < t.size() && (static_cast<unsigned char>(t[at]) & 0xC0) == 0x80) ++at;
  ASSERT_LT(at, t.size()) << "greedy output too short: '" << t << "'";
  size_t len = 1;
  while (at + len < t.size() && (static_cast<unsigned char>(t[at + len]) & 0xC0) == 0x80) ++len;
  const std::string stop = t.substr(at, len);
  const std::string expected = t.substr(0, t.find(stop));

  v1::GenerateRequest r = text_request("once upon a time", 48);
  r.mutable_params()->add_stop(stop);
  auto stopped = client_->generate(r);
  ASSERT_TRUE(stopped.ok()) << stopped.status().to_string();
  EXPECT_EQ(stopped->finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(stopped->text(), expected) << "stop '" << stop << "' in '" << t << "'";

  std::string streamed;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  ASSERT_TRUE(client_
                  ->generate_stream(r,
                                    [&](const v1::GenerateStreamResponse& m) {
                                      streamed += m.text();
                                      finish = m.finish_reason();
                                      return true;
                                    })
                  .ok());
  EXPECT_EQ(streamed, expected);
  EXPECT_EQ(finish, v1::FINISH_REASON_STOP);
}

TEST_F(TextTest, MalformedUtf8IsInvalidArgument) {
  auto g = client_->generate(text_request(std::string("ok \xe2\x82", 5), 4));
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("'text'"), std::string::npos) << g.status().message();
  auto t = client_->tokenize(std::string("\xff", 1), true);
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  auto empty = client_->generate(text_request("", 4));
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("prompt"), std::string::npos) << empty.status().message();
}

}  // namespace
}  // namespace loraserve::testing
