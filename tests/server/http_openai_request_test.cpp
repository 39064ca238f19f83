// OpenAI request parsing (server/http_openai_request): every field OpenAI and vLLM define that
// loraserve honours lands in the engine's parameters, unknown fields are ignored, and every
// malformed or unsupported field is INVALID_ARGUMENT naming the field.
#include "server/http_openai_request.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace loraserve::server {
namespace {

OpenAiRequest parse_ok(const std::string& body, bool chat = false) {
  auto r = parse_openai_request(body, chat);
  if (auto* e = std::get_if<RequestError>(&r)) {
    ADD_FAILURE() << body << " -> " << e->status.to_string() << " (param " << e->param << ")";
    return {};
  }
  return std::get<OpenAiRequest>(r);
}

RequestError parse_bad(const std::string& body, bool chat = false) {
  auto r = parse_openai_request(body, chat);
  if (auto* e = std::get_if<RequestError>(&r)) return *e;
  ADD_FAILURE() << body << " was accepted";
  return {};
}

TEST(HttpOpenAiRequest, CompletionFieldsReachTheEngineParameters) {
  const OpenAiRequest r = parse_ok(R"({
    "model": "sort", "prompt": "hello", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9,
    "top_k": 40, "seed": 12, "stop": ["\n", "END"], "logprobs": 3, "stream": true,
    "stream_options": {"include_usage": true}, "ignore_eos": true, "stop_token_ids": [2, 3],
    "skip_special_tokens": false, "return_token_ids": true, "user": "someone",
    "include_stop_str_in_output": true, "n": 1, "best_of": 1, "echo": false, "presence_penalty": 0, "frequency_penalty": 0.0,
    "logit_bias": {}, "suffix": null, "some_future_field": {"nested": [1, 2]}})");
  EXPECT_FALSE(r.chat);
  EXPECT_EQ(r.model, "sort");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(std::get<std::string>(r.prompts[0]), "hello");
  EXPECT_TRUE(r.add_special_tokens);
  EXPECT_EQ(r.params.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.params.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.params.top_p, 0.9f);
  EXPECT_EQ(r.params.top_k, 40);
  EXPECT_EQ(r.params.seed, 12u);
  EXPECT_EQ(r.params.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(r.params.stop_token_ids, (std::vector<int32_t>{2, 3}));
  EXPECT_TRUE(r.params.ignore_eos);
  EXPECT_FALSE(r.params.skip_special_tokens);
  EXPECT_TRUE(r.params.include_stop_str_in_output);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_EQ(r.params.logprobs, 3);
  EXPECT_TRUE(r.params.want_logprob);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.return_token_ids);
}

TEST(HttpOpenAiRequest, CompletionDefaultsAreOpenAis) {
  const OpenAiRequest r = parse_ok(R"({"prompt": "x", "temperature": null, "max_tokens": null})");
  EXPECT_EQ(r.model, "");
  EXPECT_EQ(r.params.max_tokens, kCompletionsDefaultMaxTokens);
  EXPECT_FLOAT_EQ(r.params.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r.params.top_p, 1.0f);
  EXPECT_EQ(r.params.top_k, 0);
  EXPECT_FALSE(r.params.seed.has_value());
  EXPECT_FALSE(r.logprobs);
  EXPECT_FALSE(r.params.want_logprob);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "top_k": -1})").params.top_k, 0);  // vLLM's "off"
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "max_tokens": 5.0})").params.max_tokens, 5);
  // logprobs 0: the sampled token's logprob, no alternatives.
  const OpenAiRequest zero = parse_ok(R"({"prompt": "x", "logprobs": 0})");
  EXPECT_TRUE(zero.logprobs);
  EXPECT_EQ(zero.params.logprobs, 0);
  EXPECT_TRUE(zero.params.want_logprob);
  // A negative seed is a seed too (vLLM takes the int64 range).
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "seed": -1})").params.seed, ~uint64_t{0});
}

TEST(HttpOpenAiRequest, PromptShapes) {
  auto ids = parse_ok(R"({"prompt": [5, 6, 7]})");
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_EQ(std::get<std::vector<int32_t>>(ids.prompts[0]), (std::vector<int32_t>{5, 6, 7}));
  auto texts = parse_ok(R"({"prompt": ["a", "b"]})");
  ASSERT_EQ(texts.prompts.size(), 2u);
  EXPECT_EQ(std::get<std::string>(texts.prompts[1]), "b");
  auto lists = parse_ok(R"({"prompt": [[1], [2, 3]]})");
  ASSERT_EQ(lists.prompts.size(), 2u);
  EXPECT_EQ(std::get<std::vector<int32_t>>(lists.prompts[1]), (std::vector<int32_t>{2, 3}));
}

TEST(HttpOpenAiRequest, ChatMessagesAndFields) {
  const OpenAiRequest r = parse_ok(R"({
    "model": "m", "messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
       "name": "ann"},
      {"role": "assistant", "content": ""}],
    "max_tokens": 3, "max_completion_tokens": 9, "logprobs": true, "top_logprobs": 2,
    "tool_choice": "none", "response_format": {"type": "text"}, "parallel_tool_calls": false,
    "add_generation_prompt": false})",
                                   /*chat=*/true);
  EXPECT_TRUE(r.chat);
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[0].content, "be brief");
  EXPECT_EQ(r.messages[1].content, "a\nb");
  EXPECT_EQ(r.messages[1].name, "ann");
  EXPECT_EQ(r.messages[2].content, "");
  // A template that takes content lists gets the parts as sent; another gets them joined.
  const auto as_lists = chat_template_messages(r, /*content_lists=*/true);
  EXPECT_EQ(as_lists[1]["content"], nlohmann::ordered_json::parse(
                                        R"([{"type": "text", "text": "a"},
                                            {"type": "text", "text": "b"}])"));
  EXPECT_EQ(as_lists[0]["content"], "be brief");  // a string stays a string
  EXPECT_EQ(chat_template_messages(r, false)[1]["content"], "a\nb");
  EXPECT_EQ(r.params.max_tokens, 9);  // max_completion_tokens wins
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 2);
  EXPECT_FALSE(r.add_generation_prompt);
  EXPECT_FALSE(r.add_special_tokens);  // the template writes BOS
  // No default max_tokens for chat: the engine's applies.
  EXPECT_FALSE(parse_ok(R"({"messages": [{"role": "user", "content": "x"}]})", true)
                   .params.max_tokens.has_value());
}

TEST(HttpOpenAiRequest, NChoicesPerPrompt) {
  EXPECT_EQ(parse_ok(R"({"prompt": "x"})").n, 1);
  EXPECT_EQ(parse_ok(R"({"prompt": ["x", "y"], "n": 64})").n, 64);
  EXPECT_EQ(parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "n": 128})", true).n, 128);
}

TEST(HttpOpenAiRequest, PenaltiesAndLogitBiasReachTheEngineParameters) {
  const OpenAiRequest r = parse_ok(R"({
    "prompt": "x", "presence_penalty": -1.5, "frequency_penalty": 2, "repetition_penalty": 1.15,
    "min_p": 0.05, "min_tokens": 3, "logit_bias": {"50256": -100, "7": 2.5, "0012": 100},
    "allowed_token_ids": [7, 12, 9]})");
  EXPECT_EQ(r.params.allowed_token_ids, (std::vector<int32_t>{7, 12, 9}));
  EXPECT_FLOAT_EQ(r.params.presence_penalty, -1.5f);
  EXPECT_FLOAT_EQ(r.params.frequency_penalty, 2.0f);
  EXPECT_FLOAT_EQ(r.params.repetition_penalty, 1.15f);
  EXPECT_FLOAT_EQ(r.params.min_p, 0.05f);
  EXPECT_EQ(r.params.min_tokens, 3);
  const std::vector<std::pair<int32_t, float>> bias = {{50256, -100.0f}, {7, 2.5f}, {12, 100.0f}};
  EXPECT_EQ(r.params.logit_bias, bias);
  // Their neutral values, and nothing when absent.
  const OpenAiRequest plain = parse_ok(R"({"messages": [{"role": "user", "content": "x"}],
    "presence_penalty": 0, "repetition_penalty": 1, "logit_bias": null})",
                                       true);
  EXPECT_EQ(plain.params.presence_penalty, 0.0f);
  EXPECT_EQ(plain.params.frequency_penalty, 0.0f);
  EXPECT_EQ(plain.params.repetition_penalty, 1.0f);
  EXPECT_EQ(plain.params.min_p, 0.0f);
  EXPECT_EQ(plain.params.min_tokens, 0);
  EXPECT_TRUE(plain.params.logit_bias.empty());
}

struct BadCase {
  std::string body;
  std::string param;
  bool chat = false;
};

TEST(HttpOpenAiRequest, BadFieldsAreNamed) {
  const std::vector<BadCase> cases = {
      {R"({"prompt": "x", "n": 0})", "n"},
      {R"({"prompt": "x", "n": 129})", "n"},
      {R"({"prompt": "x", "n": "2"})", "n"},
      {R"({"prompt": ["x", "y"], "n": 65})", "n"},
      {R"({"prompt": "x", "best_of": 3})", "best_of"},
      {R"({"prompt": "x", "echo": true})", "echo"},
      {R"({"prompt": "x", "suffix": "tail"})", "suffix"},
      {R"({"prompt": "x", "logit_bias": {"5": 101}})", "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"5": "up"}})", "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"-5": 1}})", "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"5x": 1}})", "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"": 1}})", "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"2147483648": 1}})", "logit_bias"},
      {R"({"prompt": "x", "logit_bias": [[5, 1]]})", "logit_bias"},
      {R"({"prompt": "x", "presence_penalty": 2.5})", "presence_penalty"},
      {R"({"prompt": "x", "frequency_penalty": -2.01})", "frequency_penalty"},
      {R"({"prompt": "x", "frequency_penalty": "1"})", "frequency_penalty"},
      {R"({"prompt": "x", "repetition_penalty": 0})", "repetition_penalty"},
      {R"({"prompt": "x", "repetition_penalty": -1})", "repetition_penalty"},
      {R"({"prompt": "x", "repetition_penalty": 1e39})", "repetition_penalty"},
      {R"({"prompt": "x", "min_p": 1.5})", "min_p"},
      {R"({"prompt": "x", "min_tokens": -1})", "min_tokens"},
      {R"({"prompt": "x", "min_tokens": 0.5})", "min_tokens"},
      {R"({"prompt": "x", "allowed_token_ids": []})", "allowed_token_ids"},
      {R"({"prompt": "x", "allowed_token_ids": [1, -2]})", "allowed_token_ids"},
      {R"({"prompt": "x", "allowed_token_ids": 5})", "allowed_token_ids"},
      {R"({"prompt": "x", "use_beam_search": true})", "use_beam_search"},
      {R"({"prompt": "x", "include_stop_str_in_output": 1})", "include_stop_str_in_output"},
      {R"({"prompt": "x", "max_tokens": "5"})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 1e12})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 2.5})", "max_tokens"},
      {R"({"prompt": "x", "temperature": "hot"})", "temperature"},
      {R"({"prompt": "x", "top_p": [1]})", "top_p"},
      {R"({"prompt": "x", "seed": 1.5})", "seed"},
      {R"({"prompt": "x", "stop": 5})", "stop"},
      {R"({"prompt": "x", "stop": ["a", 1]})", "stop"},
      {R"({"prompt": "x", "stop_token_ids": [1, -2]})", "stop_token_ids"},
      {R"({"prompt": "x", "logprobs": true})", "logprobs"},
      {R"({"prompt": "x", "logprobs": 21})", "logprobs"},
      {R"({"prompt": "x", "stream": "yes"})", "stream"},
      {R"({"prompt": "x", "stream_options": {"include_usage": 1}})",
       "stream_options.include_usage"},
      {R"({"prompt": "x", "model": 7})", "model"},
      {R"({})", "prompt"},
      {R"({"prompt": []})", "prompt"},
      {R"({"prompt": 5})", "prompt"},
      {R"({"prompt": [1, -1]})", "prompt"},
      {R"({"prompt": [1, 4294967296]})", "prompt"},
      {R"({"prompt": ["a", [1]]})", "prompt[1]"},
      {R"({"prompt": [[1], [2, "x"]]})", "prompt[1]"},
      {R"({"prompt": "x", "ignore_eos": "true"})", "ignore_eos"},
      {R"({"messages": []})", "messages", true},
      {R"({"prompt": "x"})", "messages", true},
      {R"({"messages": ["hi"]})", "messages[0]", true},
      {R"({"messages": [{"content": "hi"}]})", "messages[0].role", true},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content", true},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content", true},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})",
       "messages[0].content[0].type", true},
      {R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})",
       "messages[0].content[0].text", true},
      {R"({"messages": [{"role": "tool", "content": "x"}]})", "messages[0].role", true},
      {R"({"messages": [{"role": "assistant", "content": "", "tool_calls": [{}]}]})",
       "messages[0].tool_calls", true},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})",
       "tools", true},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})",
       "tool_choice", true},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})",
       "response_format", true},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", "top_logprobs",
       true},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 2})", "logprobs", true},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": 129})", "n", true},
      {R"({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": [1]})",
       "chat_template_kwargs", true},
      {R"({"messages": [{"role": "user", "content": "x"}], "chat_template": "{{ x }}"})",
       "chat_template", true},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.body);
    const RequestError e = parse_bad(c.body, c.chat);
    EXPECT_EQ(e.status.code(), StatusCode::kInvalidArgument) << e.status.to_string();
    EXPECT_EQ(e.param, c.param) << e.status.message();
    EXPECT_NE(e.status.message().find(c.param.substr(0, c.param.find('.'))), std::string::npos)
        << e.status.message();
  }
}

// A refused value is echoed escaped and cut short: a content part's type with a control
// character (DEL, found by the openai_request fuzzer) and a long one with multi-byte characters.
TEST(HttpOpenAiRequest, RefusedValuesAreEchoedEscaped) {
  const RequestError del = parse_bad(
      "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"te\u007ft\"}]}]}", true);
  EXPECT_EQ(del.param, "messages[0].content[0].type");
  EXPECT_NE(del.status.message().find("'te\\x7Ft'"), std::string::npos) << del.status.message();
  std::string type;
  for (int i = 0; i < 100; ++i) type += "\u00e9";  // é, two bytes each
  const RequestError long_type = parse_bad(
      "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"" + type + "\"}]}]}", true);
  const std::string& m = long_type.status.message();
  EXPECT_LT(m.size(), 150u) << m;
  EXPECT_NE(m.find("(200 bytes)"), std::string::npos) << m;
  for (unsigned char c : m) EXPECT_TRUE(c >= 0x20 && c != 0x7f) << m;
}

TEST(HttpOpenAiRequest, MalformedBodies) {
  for (const std::string body :
       {"", "{", "[1, 2]", "\"text\"", "{\"prompt\": \"\xff\"}", "{\"prompt\": \"x\"} trailing"}) {
    SCOPED_TRACE(body);
    const RequestError e = parse_bad(body);
    EXPECT_EQ(e.status.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(e.param, "");
    EXPECT_LT(e.status.message().size(), 300u) << e.status.message();
    EXPECT_NE(e.status.message().find("the request body"), std::string::npos);
  }
}

TEST(HttpOpenAiRequest, DeeplyNestedBodyIsRefusedBeforeParsing) {
  const std::string deep = "{\"prompt\": \"x\", \"extra\": " + std::string(1000000, '[') +
                           std::string(1000000, ']') + "}";
  const RequestError e = parse_bad(deep);
  EXPECT_EQ(e.status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status.message().find("--max-json-depth"), std::string::npos) << e.status.message();
  // A realistic nesting (a chat_template_kwargs object a few levels deep) passes.
  EXPECT_EQ(parse_ok(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                        "chat_template_kwargs": {"a": {"b": [[1]]}}})",
                     true)
                .chat_template_kwargs.dump(),
            R"({"a":{"b":[[1]]}})");
}

TEST(HttpOpenAiRequest, IntegersPast64BitsAreRefusedNotRounded) {
  // nlohmann would read these as doubles, and a template would print 1.8446744073709552e+19
  // where Python prints the integer.
  for (const std::string number :
       {"18446744073709551616", "-9223372036854775809", "100000000000000000000000000000"}) {
    SCOPED_TRACE(number);
    const RequestError e =
        parse_bad(R"({"messages": [{"role": "user", "content": "x", "n": )" + number + "}]}", true);
    EXPECT_EQ(e.status.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(e.status.message().find("does not fit in 64 bits"), std::string::npos)
        << e.status.message();
  }
  // The edges, floats with exponents, and digits inside strings pass.
  const OpenAiRequest ok = parse_ok(
      R"({"messages": [{"role": "user", "content": "99999999999999999999999"}],
          "chat_template_kwargs": {"a": 18446744073709551615, "b": -9223372036854775808,
                                   "c": 1e300, "d": 123456789012345678901234.5, "e": -0}})",
      true);
  EXPECT_EQ(ok.chat_template_kwargs["a"].get<uint64_t>(), 18446744073709551615u);
  EXPECT_EQ(ok.chat_template_kwargs["b"].get<int64_t>(), INT64_MIN);
}

TEST(HttpOpenAiRequest, TooManyPrompts) {
  std::string body = "{\"prompt\": [";
  for (size_t i = 0; i <= kMaxPromptsPerRequest; ++i) body += (i ? ",\"a\"" : "\"a\"");
  body += "]}";
  EXPECT_EQ(parse_bad(body).param, "prompt");
}

// vLLM's /tokenize: a prompt (add_special_tokens true) or messages (chat: add_special_tokens
// false, add_generation_prompt true), return_token_strs; /detokenize: token ids.
TEST(HttpOpenAiRequest, TokenizeAndDetokenizeBodies) {
  auto prompt =
      parse_tokenize_request(R"({"model": "m", "prompt": "hi", "return_token_strs": true})");
  ASSERT_TRUE(std::holds_alternative<TokenizeRequest>(prompt));
  const TokenizeRequest& p = std::get<TokenizeRequest>(prompt);
  EXPECT_FALSE(p.request.chat);
  EXPECT_EQ(p.request.model, "m");
  EXPECT_EQ(std::get<std::string>(p.request.prompts.at(0)), "hi");
  EXPECT_TRUE(p.request.add_special_tokens);
  EXPECT_TRUE(p.return_token_strs);

  auto chat = parse_tokenize_request(
      R"({"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false})");
  ASSERT_TRUE(std::holds_alternative<TokenizeRequest>(chat));
  const TokenizeRequest& c = std::get<TokenizeRequest>(chat);
  EXPECT_TRUE(c.request.chat);
  EXPECT_FALSE(c.request.add_special_tokens);
  EXPECT_FALSE(c.request.add_generation_prompt);
  EXPECT_FALSE(c.return_token_strs);

  for (const auto& [body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"({"prompt": ["a", "b"]})", "prompt"},
           {R"({"prompt": [1, 2]})", "prompt"},
           {R"({})", "prompt"},
           {R"({"prompt": "x", "return_token_strs": "yes"})", "return_token_strs"},
           {R"({"messages": []})", "messages"},
           {R"([1])", ""}}) {
    auto r = parse_tokenize_request(body);
    ASSERT_TRUE(std::holds_alternative<RequestError>(r)) << body;
    EXPECT_EQ(std::get<RequestError>(r).param, param) << body;
    EXPECT_EQ(std::get<RequestError>(r).status.code(), StatusCode::kInvalidArgument) << body;
  }

  auto d = parse_detokenize_request(R"({"model": "m", "tokens": [0, 5, 2147483647]})");
  ASSERT_TRUE(std::holds_alternative<DetokenizeRequest>(d));
  EXPECT_EQ(std::get<DetokenizeRequest>(d).model, "m");
  EXPECT_EQ(std::get<DetokenizeRequest>(d).tokens, (std::vector<int32_t>{0, 5, 2147483647}));
  for (const auto& [body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"({})", "tokens"},
           {R"({"tokens": 5})", "tokens"},
           {R"({"tokens": [1, 2147483648]})", "tokens"},
           {R"({"tokens": [1.5]})", "tokens"},
           {R"({"tokens": [1], "model": 3})", "model"},
           {R"("x")", ""}}) {
    auto r = parse_detokenize_request(body);
    ASSERT_TRUE(std::holds_alternative<RequestError>(r)) << body;
    EXPECT_EQ(std::get<RequestError>(r).param, param) << body;
  }
}

}  // namespace
}  // namespace loraserve::server
