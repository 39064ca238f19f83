// The official `openai` npm client (pinned in tests/integration/openai_client/package-lock.json,
// installed by the openai_client ctest fixture) against a real `loraserve serve`: completions
// and chat completions, streaming and not, to the base model and four adapters, all at once;
// their tokens equal the gRPC answers for the same prompts (temperature 0), and the client
// raises its own error classes with OpenAI's fields for what the server refuses.
#include <gtest/gtest.h>

#include <fstream>

#include "client/client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

using json = nlohmann::json;

// A chat template simple enough that the test writes its output by hand; it refuses system turns
// and prints a `greeting` passed in chat_template_kwargs.
constexpr const char* kTemplate =
    "{% if greeting is defined %}{{ greeting }}{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('no system turns here') }}{% endif %}"
    "<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}";

std::string rendered(const std::string& user) { return "<user>" + user + "\n<assistant>"; }

class OpenAiClientTest : public ServerSuite<OpenAiClientTest> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const fs::path model = make_model_with_tokenizer(dir_->path() / "model");
    std::ofstream(model / "tokenizer_config.json") << json{{"chat_template", kTemplate}}.dump();
    const fs::path root = dir_->path() / "adapters";
    tasks_ = make_adapter_root(root, 4);
    std::vector<std::string> args = {"--model",     model.string(),        "--adapter-root",
                                     root.string(), "--served-model-name", "base"};
    for (const std::string& t : tasks_) {
      args.push_back("--preload");
      args.push_back(t + "=" + (root / t).string());
    }
    start_suite_server(args);
  }

  // Runs the node driver on `cases`; its results in order.
  static std::vector<json> run_cases(const json& cases) {
    const fs::path in = dir_->path() / "cases.json";
    const fs::path out = dir_->path() / "results.json";
    std::ofstream(in) << cases.dump();
    std::string stdout_text;
    const int rc =
        run_command({LORASERVE_NODE, "tests/integration/openai_client/run_cases.mjs", "--modules",
                     std::string(LORASERVE_OPENAI_CLIENT_DIR) + "/node_modules", "--base-url",
                     "http://" + server_->http_address() + "/v1", "--cases", in.string(), "--out",
                     out.string()},
                    &stdout_text, dir_->path() / "node.log");
    std::ifstream log(dir_->path() / "node.log");
    const std::string log_text((std::istreambuf_iterator<char>(log)), {});
    EXPECT_EQ(rc, 0) << log_text;
    const json results = json::parse(std::ifstream(out), nullptr, false);
    EXPECT_TRUE(results.is_array()) << log_text;
    return results.is_array() ? results.get<std::vector<json>>() : std::vector<json>{};
  }

  static std::vector<std::string> tasks_;
};

std::vector<std::string> OpenAiClientTest::tasks_;

TEST_F(OpenAiClientTest, CompletionsAndChatEqualTheGrpcAnswers) {
  struct Case {
    std::string kind;
    bool stream;
    std::string task;  // "" → the base model
    std::string text;  // the prompt, or the user message
  };
  std::vector<Case> cases;
  std::vector<std::string> models = {""};
  models.insert(models.end(), tasks_.begin(), tasks_.end());
  int n = 0;
  for (const std::string& task : models) {
    for (const char* kind : {"completion", "chat"}) {
      for (bool stream : {false, true}) {
        cases.push_back({kind, stream, task, "prompt number " + std::to_string(n++)});
      }
    }
  }
  json requests = json::array();
  for (const Case& c : cases) {
    json params = {{"model", c.task.empty() ? "base" : c.task},
                   {"max_tokens", 10},
                   {"temperature", 0},
                   {"return_token_ids", true}};
    if (c.kind == "chat") {
      params["messages"] = {{{"role", "user"}, {"content", c.text}}};
    } else {
      params["prompt"] = c.text;
    }
    if (c.stream) params["stream_options"] = {{"include_usage", true}};
    // Streamed cases also carry OpenAI's penalties and logit_bias (the client's typed fields).
    if (c.stream) {
      params["frequency_penalty"] = 0.8;
      params["presence_penalty"] = -0.4;
      params["logit_bias"] = {{"101", -100}, {"116", 4.5}};
    }
    requests.push_back({{"kind", c.kind}, {"stream", c.stream}, {"params", params}});
  }
  const std::vector<json> results = run_cases(requests);
  ASSERT_EQ(results.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const json& r = results[i];
    SCOPED_TRACE(c.kind + (c.stream ? " stream" : "") + " task '" + c.task + "'");
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    v1::GenerateRequest g;
    g.set_task_id(c.task);
    g.set_text(c.kind == "chat" ? rendered(c.text) : c.text);
    g.mutable_params()->set_max_tokens(10);
    g.mutable_params()->set_temperature(0.0f);
    if (c.stream) {
      g.mutable_params()->set_frequency_penalty(0.8f);
      g.mutable_params()->set_presence_penalty(-0.4f);
      (*g.mutable_params()->mutable_logit_bias())[101] = -100.0f;
      (*g.mutable_params()->mutable_logit_bias())[116] = 4.5f;
    }
    auto want = client_->generate(g);
    ASSERT_TRUE(want.ok()) << want.status().to_string();
    EXPECT_EQ(r["token_ids"].get<std::vector<int32_t>>(),
              std::vector<int32_t>(want->token_ids().begin(), want->token_ids().end()));
    EXPECT_EQ(r["text"], want->text());
    EXPECT_EQ(r["finish_reason"],
              want->finish_reason() == v1::FINISH_REASON_LENGTH ? "length" : "stop");
    EXPECT_EQ(r["usage"]["completion_tokens"], want->usage().completion_tokens());
    EXPECT_EQ(r["usage"]["prompt_tokens"], want->usage().prompt_tokens());
    if (c.kind == "chat") {
      EXPECT_EQ(r["role"], "assistant");
    }
    if (c.stream) {
      EXPECT_GE(r["chunks"].get<int>(), 2);
      if (c.kind == "chat") {
        EXPECT_EQ(r["first_delta"]["role"], "assistant");
      }
      EXPECT_EQ(r["objects"],
                json::array({c.kind == "chat" ? "chat.completion.chunk" : "text_completion"}));
    } else {
      EXPECT_EQ(r["object"], c.kind == "chat" ? "chat.completion" : "text_completion");
      EXPECT_EQ(r["model"], c.task.empty() ? "base" : c.task);
      EXPECT_EQ(r["choices"], 1);
    }
  }
}

TEST_F(OpenAiClientTest, ChatTemplateVariablesAndErrors) {
  const std::vector<json> results = run_cases(json::array(
      {{{"kind", "chat"},
        {"stream", false},
        {"params",
         {{"model", tasks_[1]},
          {"messages",
           {{{"role", "user"},
             {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}}}}},
          {"chat_template_kwargs", {{"greeting", "hello "}}},
          {"max_tokens", 6},
          {"temperature", 0},
          {"return_token_ids", true}}}},
       {{"kind", "chat"},
        {"stream", true},
        {"params",
         {{"model", "base"},
          {"messages",
           {{{"role", "system"}, {"content", "x"}}, {{"role", "user"}, {"content", "y"}}}},
          {"max_tokens", 6}}}}}));
  ASSERT_EQ(results.size(), 2u);
  ASSERT_TRUE(results[0]["ok"].get<bool>()) << results[0];
  v1::GenerateRequest g;
  g.set_task_id(tasks_[1]);
  g.set_text("hello <user>a\nb\n<assistant>");  // text parts joined by newlines
  g.mutable_params()->set_max_tokens(6);
  g.mutable_params()->set_temperature(0.0f);
  auto want = client_->generate(g);
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  EXPECT_EQ(results[0]["token_ids"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(want->token_ids().begin(), want->token_ids().end()));
  // A template that raises is the request's 400, with the template's message and line.
  EXPECT_EQ(results[1]["status"], 400) << results[1];
  EXPECT_EQ(results[1]["class"], "BadRequestError");
  EXPECT_NE(results[1]["message"].get<std::string>().find("no system turns here"),
            std::string::npos)
      << results[1];
}

TEST_F(OpenAiClientTest, ChatLogprobsHaveOpenAisShape) {
  const std::vector<json> results =
      run_cases(json::array({{{"kind", "chat"},
                              {"stream", false},
                              {"params",
                               {{"model", tasks_[0]},
                                {"messages", {{{"role", "user"}, {"content", "logprobs"}}}},
                                {"max_tokens", 5},
                                {"temperature", 0},
                                {"logprobs", true},
                                {"top_logprobs", 2}}}}}));
  ASSERT_EQ(results.size(), 1u);
  const json& r = results[0];
  ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
  const json& content = r["logprobs"]["content"];
  ASSERT_EQ(content.size(), 5u) << r.dump();
  for (const json& t : content) {
    EXPECT_TRUE(t["logprob"].is_number());
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
    EXPECT_NEAR(t["top_logprobs"][0]["logprob"].get<double>(), t["logprob"].get<double>(), 1e-6);
    // `bytes` are the token's own bytes; its text is them, or for a lone byte that is not
    // UTF-8 (the fixture's tokens are single bytes) "bytes:\xNN", as OpenAI shows one.
    std::string bytes;
    for (int b : t["bytes"]) bytes.push_back(static_cast<char>(b));
    ASSERT_EQ(bytes.size(), 1u) << t.dump();
    const auto byte = static_cast<unsigned char>(bytes[0]);
    EXPECT_EQ(t["token"].get<std::string>(),
              byte < 0x80 ? bytes : fmt::format("bytes:\\x{:02x}", byte));
  }
}

TEST_F(OpenAiClientTest, TheClientReadsNChoices) {
  const json user = json::array({{{"role", "user"}, {"content", "x"}}});
  const std::vector<json> results = run_cases(json::array({
      {{"kind", "completion"},
       {"stream", false},
       {"params",
        {{"model", "base"}, {"prompt", "x"}, {"n", 3}, {"max_tokens", 4}, {"ignore_eos", true}}}},
      {{"kind", "chat"},
       {"stream", false},
       {"params",
        {{"model", "base"},
         {"messages", user},
         {"n", 2},
         {"max_tokens", 4},
         {"ignore_eos", true}}}},
  }));
  ASSERT_EQ(results.size(), 2u);
  ASSERT_TRUE(results[0]["ok"].get<bool>()) << results[0];
  EXPECT_EQ(results[0]["choices"], 3);
  EXPECT_EQ(results[0]["usage"]["completion_tokens"], 12);
  ASSERT_TRUE(results[1]["ok"].get<bool>()) << results[1];
  EXPECT_EQ(results[1]["choices"], 2);
  EXPECT_EQ(results[1]["usage"]["completion_tokens"], 8);
}

TEST_F(OpenAiClientTest, TheClientRaisesItsErrorClasses) {
  auto request = [](const char* kind, bool stream, json params) {
    return json{{"kind", kind}, {"stream", stream}, {"params", std::move(params)}};
  };
  const json user = json::array({{{"role", "user"}, {"content", "x"}}});
  const json tool = {{"type", "function"}, {"function", {{"name", "f"}}}};
  const std::vector<json> results = run_cases(json::array({
      request("completion", false, {{"model", "missing"}, {"prompt", "x"}}),
      request("completion", true, {{"model", "missing"}, {"prompt", "x"}}),
      request("completion", false, {{"model", "base"}, {"prompt", "x"}, {"n", 200}}),
      request("chat", false,
              {{"model", "base"}, {"messages", user}, {"tools", json::array({tool})}}),
      request("completion", false, {{"model", "base"}, {"prompt", "x"}, {"max_tokens", 100000}}),
  }));
  ASSERT_EQ(results.size(), 5u);
  for (int i : {0, 1}) {
    EXPECT_FALSE(results[i]["ok"].get<bool>());
    EXPECT_EQ(results[i]["status"], 404) << results[i];
    EXPECT_EQ(results[i]["class"], "NotFoundError");
    EXPECT_EQ(results[i]["code"], "model_not_found");
    EXPECT_EQ(results[i]["param"], "model");
  }
  EXPECT_EQ(results[2]["status"], 400) << results[2];
  EXPECT_EQ(results[2]["class"], "BadRequestError");
  EXPECT_EQ(results[2]["param"], "n");
  EXPECT_EQ(results[3]["status"], 400) << results[3];
  EXPECT_EQ(results[3]["param"], "tools");
  EXPECT_EQ(results[4]["status"], 400) << results[4];
  EXPECT_EQ(results[4]["type"], "invalid_request_error");
}

}  // namespace
}  // namespace loraserve::testing
