// The OpenAI-compatible HTTP API of a real `loraserve serve` on loopback (the fixture model with
// a byte-level tokenizer, four adapters): /health and /v1/models, completions equal to the gRPC
// answers for the same prompts (tokens, text, logprobs), SSE framing and usage chunks, several
// prompts in one request, stop strings, every error as its HTTP status and OpenAI's error
// object, the API key, the queue limit as 429, a client that hangs up mid-stream (its sequence
// is cancelled and its KV blocks freed), SSE chunks arriving one by one through `curl -N`, and
// the drain on SIGTERM covering HTTP calls.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <future>
#include <optional>
#include <set>
#include <thread>

#include "client/client.h"
#include "tests/integration/http_client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

extern char** environ;

namespace loraserve::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

std::vector<int32_t> grpc_ids(const v1::GenerateResponse& r) {
  return {r.token_ids().begin(), r.token_ids().end()};
}

// The fixture model with a byte-level tokenizer and a context of `context` tokens (the weights
// do not depend on it).
fs::path make_model(const fs::path& dir, int context = 128) {
  make_model_with_tokenizer(dir);
  json config = json::parse(std::ifstream(dir / "config.json"));
  config["max_position_embeddings"] = context;
  std::ofstream(dir / "config.json") << config.dump(2);
  return dir;
}

// A chat template whose output the test writes by hand.
constexpr const char* kTemplate =
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}";

// Waits until the engine runs nothing; false after `timeout_s`.
bool wait_idle(const client::Client& client, double timeout_s = 60) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (Clock::now() < deadline) {
    auto s = client.stats();
    if (s.ok() && s->requests_running() == 0 && s->requests_queued() == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

class HttpTest : public ServerSuite<HttpTest> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const fs::path model = make_model(dir_->path() / "fixture-model");
    std::ofstream(model / "tokenizer_config.json") << json{{"chat_template", kTemplate}}.dump();
    const fs::path root = dir_->path() / "adapters";
    tasks_ = make_adapter_root(root, 5);
    std::vector<std::string> args = {"--model", model.string(), "--adapter-root", root.string()};
    for (int i = 0; i < 4; ++i) {
      args.push_back("--preload");
      args.push_back(tasks_[i] + "=" + (root / tasks_[i]).string());
    }
    start_suite_server(args);
  }

  static HttpClient http() { return HttpClient(server_->http_address()); }

  static v1::GenerateRequest grpc_request(const std::string& task, const std::string& text,
                                          int32_t max_tokens) {
    v1::GenerateRequest r;
    r.set_task_id(task);
    r.set_text(text);
    r.mutable_params()->set_max_tokens(max_tokens);
    r.mutable_params()->set_temperature(0.0f);
    return r;
  }

  static std::vector<std::string> tasks_;
};

std::vector<std::string> HttpTest::tasks_;

TEST_F(HttpTest, HealthAndModels) {
  HttpReply r = http().get("/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.json, json::parse(R"({"status": "serving"})"));

  r = http().get("/v1/models");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["object"], "list");
  std::map<std::string, json> models;
  for (const json& m : r.json["data"]) models[m["id"]] = m;
  ASSERT_EQ(models.size(), 5u) << r.body;         // the base model and t0..t3
  const json& base = models.at("fixture-model");  // the folder's name
  EXPECT_EQ(base["object"], "model");
  EXPECT_EQ(base["owned_by"], "loraserve");
  EXPECT_TRUE(base["parent"].is_null());
  EXPECT_EQ(base["max_model_len"], 128);
  EXPECT_GT(base["created"].get<int64_t>(), 1700000000);
  for (int i = 0; i < 4; ++i) {
    const json& m = models.at(tasks_[i]);
    EXPECT_EQ(m["parent"], "fixture-model");
    EXPECT_EQ(m["object"], "model");
  }
  // Retrieve one model (OpenAI's GET /v1/models/{model}): its entry of the list, or 404.
  for (const std::string& id : {std::string("fixture-model"), tasks_[2]}) {
    const HttpReply one = http().get("/v1/models/" + id);
    ASSERT_EQ(one.status, 200) << one.body;
    EXPECT_EQ(one.json, models.at(id));
  }
  const HttpReply missing = http().get("/v1/models/nope");
  EXPECT_EQ(missing.status, 404) << missing.body;
  EXPECT_EQ(missing.json["error"]["code"], "model_not_found");
  EXPECT_EQ(missing.json["error"]["param"], "model");

  // The list follows the registry: what Admin loads and unloads.
  ASSERT_TRUE(
      client_->load_adapter("late", (dir_->path() / "adapters" / tasks_[4]).string(), false).ok());
  ASSERT_TRUE(client_->unload_adapter(tasks_[1]).ok());
  r = http().get("/v1/models");
  std::set<std::string> ids;
  for (const json& m : r.json["data"]) ids.insert(m["id"]);
  EXPECT_EQ(ids, (std::set<std::string>{"fixture-model", tasks_[0], tasks_[2], tasks_[3], "late"}));
  ASSERT_TRUE(client_->unload_adapter("late").ok());
  ASSERT_TRUE(
      client_->load_adapter(tasks_[1], (dir_->path() / "adapters" / tasks_[1]).string(), false)
          .ok());
}

// Completions from several tasks at once, text and token-id prompts, equal to gRPC's answers.
TEST_F(HttpTest, CompletionsEqualTheGrpcAnswers) {
  struct Case {
    std::string model;  // "" → the base model's name
    std::string task;
    std::string prompt;
  };
  std::vector<Case> cases;
  const std::vector<std::string> prompts = {"hello world", "the quick brown fox", "abc"};
  for (size_t p = 0; p < prompts.size(); ++p) {
    cases.push_back({"fixture-model", "", prompts[p]});
    for (int t = 0; t < 4; ++t) cases.push_back({tasks_[t], tasks_[t], prompts[p]});
  }
  cases.push_back({"", "", "no model field"});
  std::vector<std::future<HttpReply>> replies;
  for (size_t i = 0; i < cases.size(); ++i) {
    json body = {{"prompt", cases[i].prompt},
                 {"max_tokens", 10},
                 {"temperature", 0},
                 {"return_token_ids", true}};
    if (i % 2 == 1) {  // every other prompt as token ids
      std::vector<int32_t> ids;
      for (unsigned char c : cases[i].prompt) ids.push_back(c);
      body["prompt"] = ids;
    }
    if (!cases[i].model.empty()) body["model"] = cases[i].model;
    replies.push_back(
        std::async(std::launch::async, [body] { return http().post("/v1/completions", body); }));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + " model '" + cases[i].model + "'");
    const HttpReply r = replies[i].get();
    ASSERT_EQ(r.status, 200) << r.body;
    auto g = client_->generate(grpc_request(cases[i].task, cases[i].prompt, 10));
    ASSERT_TRUE(g.ok()) << g.status().to_string();
    const json& c = r.json["choices"][0];
    EXPECT_EQ(ids_of(c["token_ids"]), grpc_ids(*g));
    EXPECT_EQ(c["text"], g->text());
    EXPECT_EQ(c["index"], 0);
    EXPECT_EQ(c["finish_reason"],
              g->finish_reason() == v1::FINISH_REASON_LENGTH ? "length" : "stop");
    EXPECT_TRUE(c["logprobs"].is_null());
    EXPECT_EQ(r.json["object"], "text_completion");
    EXPECT_EQ(r.json["model"], cases[i].model.empty() ? "fixture-model" : cases[i].model);
    EXPECT_TRUE(r.json["id"].get<std::string>().starts_with("cmpl-"));
    EXPECT_EQ(r.request_id, r.json["id"]);
    EXPECT_TRUE(r.json["created"].is_number_integer());
    EXPECT_EQ(r.json["usage"]["prompt_tokens"], cases[i].prompt.size());
    EXPECT_EQ(r.json["usage"]["completion_tokens"], g->token_ids_size());
    EXPECT_EQ(r.json["usage"]["total_tokens"], cases[i].prompt.size() + g->token_ids_size());
    EXPECT_EQ(r.content_type, "application/json");
  }
}

TEST_F(HttpTest, CompletionLogprobsEqualTheGrpcOnes) {
  v1::GenerateRequest g = grpc_request(tasks_[2], "logprobs", 8);
  g.mutable_params()->set_logprobs(3);
  auto want = client_->generate(g);
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  const HttpReply r = http().post("/v1/completions", {{"model", tasks_[2]},
                                                      {"prompt", "logprobs"},
                                                      {"max_tokens", 8},
                                                      {"temperature", 0},
                                                      {"logprobs", 3},
                                                      {"return_token_ids", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json& lp = r.json["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 8u) << lp;
  size_t offset = 0;
  for (int i = 0; i < 8; ++i) {
    SCOPED_TRACE("token " + std::to_string(i));
    const v1::Logprob& w = want->logprobs(i);
    // Token id b is byte b: the token's text is that byte, or "bytes:\xNN" for a byte that is
    // not UTF-8 alone (as OpenAI shows a piece of a character).
    const std::string text = lp["tokens"][i];
    if (w.token_id() < 0x80) {
      EXPECT_EQ(text, std::string(1, static_cast<char>(w.token_id())));
    } else {
      EXPECT_EQ(text, fmt::format("bytes:\\x{:02x}", w.token_id()));
    }
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), w.logprob(), 1e-5);
    EXPECT_EQ(lp["text_offset"][i], offset);
    // Characters begun before the token: a UTF-8 continuation byte begins none.
    offset += (w.token_id() & 0xC0) != 0x80 ? 1 : 0;
    const json& top = lp["top_logprobs"][i];
    EXPECT_TRUE(top.contains(text));
    EXPECT_LE(top.size(), 4u);
    EXPECT_GE(top.size(), 1u);
    for (const v1::TokenLogprob& alt : w.top()) {
      if (alt.token_id() >= 0x80) continue;
      const std::string alt_text(1, static_cast<char>(alt.token_id()));
      ASSERT_TRUE(top.contains(alt_text)) << top;
      EXPECT_NEAR(top[alt_text].get<double>(), alt.logprob(), 1e-5);
    }
  }
}

TEST_F(HttpTest, StreamingChunksConcatenateToTheAnswer) {
  for (const bool usage : {false, true}) {
    SCOPED_TRACE(usage ? "with usage" : "without usage");
    json body = {{"model", tasks_[0]}, {"prompt", "stream me"},    {"max_tokens", 20},
                 {"temperature", 0},   {"return_token_ids", true}, {"stream", true}};
    if (usage) body["stream_options"] = {{"include_usage", true}};
    std::vector<SseEvent> events;
    const HttpReply r = http().stream("/v1/completions", body, [&](const SseEvent& e) {
      events.push_back(e);
      return true;
    });
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.content_type, "text/event-stream");
    // At least one chunk (tokens that arrive while a chunk is written are merged into the
    // next), the usage chunk when asked for, and [DONE].
    ASSERT_GE(events.size(), usage ? 3u : 2u);
    EXPECT_EQ(events.back().data, "[DONE]");
    auto want = client_->generate(grpc_request(tasks_[0], "stream me", 20));
    ASSERT_TRUE(want.ok());
    std::vector<int32_t> ids;
    std::string text;
    std::string finish;
    std::set<std::string> stream_ids;
    for (size_t i = 0; i + 1 < events.size(); ++i) {
      const json& j = events[i].json;
      ASSERT_TRUE(j.is_object()) << events[i].data;
      EXPECT_EQ(j["object"], "text_completion");
      EXPECT_EQ(j["model"], tasks_[0]);
      stream_ids.insert(j["id"].get<std::string>());
      EXPECT_EQ(j.contains("usage"), usage);
      if (usage && i + 2 == events.size()) {  // the usage chunk
        EXPECT_TRUE(j["choices"].empty());
        EXPECT_EQ(j["usage"]["prompt_tokens"], 9);
        EXPECT_EQ(j["usage"]["completion_tokens"], 20);
        EXPECT_EQ(j["usage"]["total_tokens"], 29);
        continue;
      }
      if (usage) {
        EXPECT_TRUE(j["usage"].is_null());
      }
      ASSERT_EQ(j["choices"].size(), 1u);
      const json& c = j["choices"][0];
      EXPECT_EQ(c["index"], 0);
      for (int32_t id : ids_of(c["token_ids"])) ids.push_back(id);
      text += c["text"].get<std::string>();
      if (!c["finish_reason"].is_null()) {
        EXPECT_TRUE(finish.empty());
        finish = c["finish_reason"];
      }
    }
    EXPECT_EQ(stream_ids.size(), 1u);
    EXPECT_EQ(ids, grpc_ids(*want));
    EXPECT_EQ(text, want->text());
    EXPECT_EQ(finish, "length");
  }
}

TEST_F(HttpTest, SeveralPromptsAreSeveralChoices) {
  const std::vector<std::string> prompts = {"one", "two two", "three three three"};
  const HttpReply r = http().post("/v1/completions", {{"model", tasks_[3]},
                                                      {"prompt", prompts},
                                                      {"max_tokens", 6},
                                                      {"temperature", 0},
                                                      {"return_token_ids", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.json["choices"].size(), 3u);
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < 3; ++i) {
    const json& c = r.json["choices"][i];
    EXPECT_EQ(c["index"], i);
    auto want = client_->generate(grpc_request(tasks_[3], prompts[i], 6));
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(ids_of(c["token_ids"]), grpc_ids(*want));
    prompt_tokens += static_cast<int64_t>(prompts[i].size());
  }
  EXPECT_EQ(r.json["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(r.json["usage"]["completion_tokens"], 18);

  // Streamed: each choice's chunks carry its index.
  std::map<int, std::vector<int32_t>> streamed;
  const HttpReply s = http().stream(
      "/v1/completions",
      {{"model", tasks_[3]},
       {"prompt", json::array({json::array({111, 110, 101}),                        // "one"
                               json::array({116, 119, 111, 32, 116, 119, 111})})},  // "two two"
       {"max_tokens", 6},
       {"temperature", 0},
       {"return_token_ids", true},
       {"stream", true}},
      [&](const SseEvent& e) {
        if (e.json.is_object())
          for (const json& c : e.json["choices"])
            for (int32_t id : ids_of(c["token_ids"])) streamed[c["index"]].push_back(id);
        return true;
      });
  ASSERT_EQ(s.status, 200);
  EXPECT_EQ(streamed[0], ids_of(r.json["choices"][0]["token_ids"]));
  EXPECT_EQ(streamed[1], ids_of(r.json["choices"][1]["token_ids"]));
}

// n choices per prompt: numbered prompt by prompt, choice j of a seeded request sampled with
// seed + j (vLLM's rule), each prompt's tokens counted once in usage.
TEST_F(HttpTest, NChoicesPerPromptSampleWithConsecutiveSeeds) {
  const std::vector<std::string> prompts = {"alpha", "beta beta"};
  const HttpReply r = http().post("/v1/completions", {{"model", tasks_[0]},
                                                      {"prompt", prompts},
                                                      {"n", 3},
                                                      {"max_tokens", 8},
                                                      {"temperature", 1.2},
                                                      {"seed", 40},
                                                      {"ignore_eos", true},
                                                      {"return_token_ids", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.json["choices"].size(), 6u);
  std::set<std::vector<int32_t>> distinct;
  for (size_t i = 0; i < 6; ++i) {
    const json& c = r.json["choices"][i];
    EXPECT_EQ(c["index"], i);
    v1::GenerateRequest g = grpc_request(tasks_[0], prompts[i / 3], 8);
    g.mutable_params()->set_temperature(1.2f);
    g.mutable_params()->set_seed(40 + i % 3);
    g.mutable_params()->set_ignore_eos(true);
    auto want = client_->generate(g);
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(ids_of(c["token_ids"]), grpc_ids(*want)) << i;
    distinct.insert(ids_of(c["token_ids"]));
  }
  EXPECT_GE(distinct.size(), 4u);  // the seeds differ, so the samples do
  EXPECT_EQ(r.json["usage"]["prompt_tokens"], 5 + 9);
  EXPECT_EQ(r.json["usage"]["completion_tokens"], 6 * 8);

  // Chat, streamed: each choice opens with its role and carries its index.
  std::map<int, std::string> text;
  std::map<int, int> roles;
  json usage;
  const HttpReply s =
      http().stream("/v1/chat/completions",
                    {{"model", tasks_[0]},
                     {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                     {"n", 2},
                     {"max_tokens", 5},
                     {"temperature", 0},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}},
                    [&](const SseEvent& e) {
                      if (!e.json.is_object()) return true;
                      if (!e.json["usage"].is_null()) usage = e.json["usage"];
                      for (const json& c : e.json["choices"]) {
                        if (c["delta"].contains("role")) ++roles[c["index"]];
                        if (c["delta"].contains("content"))
                          text[c["index"]] += c["delta"]["content"];
                      }
                      return true;
                    });
  ASSERT_EQ(s.status, 200);
  EXPECT_EQ(roles, (std::map<int, int>{{0, 1}, {1, 1}}));
  ASSERT_EQ(text.size(), 2u);
  EXPECT_EQ(text[0], text[1]);  // greedy: the same answer twice
  EXPECT_EQ(usage["completion_tokens"], 10);
  EXPECT_EQ(usage["prompt_tokens"], std::string("<user>hi\n<assistant>").size());
}

TEST_F(HttpTest, StopStringsAndStopTokens) {
  auto whole = client_->generate(grpc_request("", "stops", 30));
  ASSERT_TRUE(whole.ok());
  // A one-character stop string the answer holds (an ASCII one: the fixture's bytes are random).
  const std::string& text = whole->text();
  size_t at = 1;
  while (at < text.size() && !(text[at] > 0x20 && text[at] < 0x7f)) ++at;
  ASSERT_LT(at, text.size()) << "no ASCII character in the answer";
  const std::string stop = text.substr(at, 1);
  v1::GenerateRequest g = grpc_request("", "stops", 30);
  g.mutable_params()->add_stop(stop);
  auto want = client_->generate(g);
  ASSERT_TRUE(want.ok());
  const HttpReply r =
      http().post("/v1/completions",
                  {{"prompt", "stops"}, {"max_tokens", 30}, {"temperature", 0}, {"stop", stop}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["choices"][0]["text"], want->text());
  EXPECT_EQ(r.json["choices"][0]["finish_reason"], "stop");
  // vLLM's include_stop_str_in_output: the text ends right after the stop string, over HTTP and
  // gRPC alike.
  g.mutable_params()->set_include_stop_str_in_output(true);
  auto kept = client_->generate(g);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->text(), want->text() + stop);
  const HttpReply k = http().post("/v1/completions", {{"prompt", "stops"},
                                                      {"max_tokens", 30},
                                                      {"temperature", 0},
                                                      {"stop", stop},
                                                      {"include_stop_str_in_output", true}});
  ASSERT_EQ(k.status, 200) << k.body;
  EXPECT_EQ(k.json["choices"][0]["text"], want->text() + stop);
  EXPECT_EQ(k.json["choices"][0]["finish_reason"], "stop");

  const int32_t stop_id = whole->token_ids(4);
  const HttpReply t = http().post("/v1/completions", {{"prompt", "stops"},
                                                      {"max_tokens", 30},
                                                      {"temperature", 0},
                                                      {"stop_token_ids", {stop_id}},
                                                      {"return_token_ids", true}});
  ASSERT_EQ(t.status, 200) << t.body;
  const auto ids = ids_of(t.json["choices"][0]["token_ids"]);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), stop_id);
  EXPECT_EQ(t.json["choices"][0]["finish_reason"], "stop");
}

// OpenAI's logprobs line up with the answer's text: the EOS that ends an answer and the tokens
// past a stop string add no text, so they have no entry, streamed or not (a streamed token's
// entry waits while its text is held back as a possible stop string).
TEST_F(HttpTest, LogprobsCoverTheTokensOfTheTextOnly) {
  auto entries = [&](json body) {
    body["logprobs"] = 0;
    const HttpReply whole = http().post("/v1/completions", body);
    EXPECT_EQ(whole.status, 200) << whole.body;
    size_t streamed = 0;
    std::string streamed_text;
    body["stream"] = true;
    const HttpReply s = http().stream("/v1/completions", body, [&](const SseEvent& e) {
      if (e.json.is_object())
        for (const json& c : e.json["choices"]) {
          if (c["logprobs"].is_object()) streamed += c["logprobs"]["tokens"].size();
          streamed_text += c["text"].get<std::string>();
        }
      return true;
    });
    EXPECT_EQ(s.status, 200);
    EXPECT_EQ(streamed_text, whole.json["choices"][0]["text"]);
    return std::pair(whole.json["choices"][0]["logprobs"]["tokens"].size(), streamed);
  };

  // An answer that ends with EOS: every token but the EOS.
  std::optional<v1::GenerateResponse> eos;
  std::string eos_prompt;
  for (int i = 0; i < 40 && !eos; ++i) {
    eos_prompt = "eos " + std::to_string(i);
    auto g = client_->generate(grpc_request("", eos_prompt, 40));
    ASSERT_TRUE(g.ok()) << g.status().to_string();
    if (g->finish_reason() == v1::FINISH_REASON_EOS && g->token_ids_size() > 1) eos = *g;
  }
  ASSERT_TRUE(eos) << "no prompt of the fixture model ends with EOS within 40 tokens";
  const auto want_eos = static_cast<size_t>(eos->token_ids_size() - 1);
  EXPECT_EQ(entries({{"prompt", eos_prompt}, {"max_tokens", 40}, {"temperature", 0}}),
            std::pair(want_eos, want_eos));

  // A stop string: an ASCII byte of the answer whose first token follows an ASCII one (a byte
  // that is not UTF-8 alone may be held back and come out with the next token's text). Its
  // entries: the tokens before that first token.
  std::string stop_prompt, stop;
  int first = -1;
  for (int i = 0; i < 40 && first < 0; ++i) {
    stop_prompt = "stops " + std::to_string(i);
    auto g = client_->generate(grpc_request("", stop_prompt, 30));
    ASSERT_TRUE(g.ok()) << g.status().to_string();
    auto ascii = [](int32_t id) { return id > 0x20 && id < 0x7f; };
    std::set<int32_t> seen = {g->token_ids(0)};
    for (int k = 1; k < g->token_ids_size() && first < 0; ++k) {
      const int32_t id = g->token_ids(k);
      if (ascii(id) && ascii(g->token_ids(k - 1)) && !seen.contains(id)) {
        first = k;
        stop.assign(1, static_cast<char>(id));
      }
      seen.insert(id);
    }
  }
  ASSERT_GE(first, 0) << "no answer of the fixture model has two ASCII tokens in a row";
  EXPECT_EQ(
      entries({{"prompt", stop_prompt}, {"max_tokens", 30}, {"temperature", 0}, {"stop", stop}}),
      std::pair(static_cast<size_t>(first), static_cast<size_t>(first)));
}

TEST_F(HttpTest, SeededSamplingIsReproducible) {
  const json body = {{"model", tasks_[1]}, {"prompt", "sample"},      {"max_tokens", 12},
                     {"temperature", 0.9}, {"top_p", 0.95},           {"top_k", 50},
                     {"seed", 7},          {"return_token_ids", true}};
  const HttpReply a = http().post("/v1/completions", body);
  const HttpReply b = http().post("/v1/completions", body);
  ASSERT_EQ(a.status, 200) << a.body;
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(a.json["choices"][0]["token_ids"], b.json["choices"][0]["token_ids"]);
  v1::GenerateRequest g = grpc_request(tasks_[1], "sample", 12);
  g.mutable_params()->set_temperature(0.9f);
  g.mutable_params()->set_top_p(0.95f);
  g.mutable_params()->set_top_k(50);
  g.mutable_params()->set_seed(7);
  auto want = client_->generate(g);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(ids_of(a.json["choices"][0]["token_ids"]), grpc_ids(*want));
}

// vLLM's penalties, min_p and OpenAI's logit_bias mean the same over HTTP and gRPC, and change
// the answer: a +100 bias forces its token, and the penalties move the greedy continuation.
TEST_F(HttpTest, PenaltiesAndLogitBiasEqualTheGrpcAnswers) {
  const json plain = {{"model", tasks_[2]},
                      {"prompt", "penalties"},
                      {"max_tokens", 16},
                      {"temperature", 0},
                      {"return_token_ids", true}};
  const HttpReply base = http().post("/v1/completions", plain);
  ASSERT_EQ(base.status, 200) << base.body;
  json penalised = plain;
  penalised["repetition_penalty"] = 1.8;
  penalised["frequency_penalty"] = 1.2;
  penalised["presence_penalty"] = 0.6;
  // The plain answer's first token, banned.
  const int32_t banned = ids_of(base.json["choices"][0]["token_ids"]).at(0);
  penalised["logit_bias"] = {{std::to_string(banned), -100}};
  penalised["min_tokens"] = 4;
  const HttpReply a = http().post("/v1/completions", penalised);
  ASSERT_EQ(a.status, 200) << a.body;
  const std::vector<int32_t> got = ids_of(a.json["choices"][0]["token_ids"]);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(std::count(got.begin(), got.end(), banned), 0);
  v1::GenerateRequest g = grpc_request(tasks_[2], "penalties", 16);
  g.mutable_params()->set_repetition_penalty(1.8f);
  g.mutable_params()->set_frequency_penalty(1.2f);
  g.mutable_params()->set_presence_penalty(0.6f);
  (*g.mutable_params()->mutable_logit_bias())[banned] = -100.0f;
  g.mutable_params()->set_min_tokens(4);
  auto want = client_->generate(g);
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  EXPECT_EQ(got, grpc_ids(*want));

  // Sampling with min_p and a forcing bias: every token is the forced one.
  const json forced = {{"model", tasks_[1]},
                       {"prompt", "forced"},
                       {"max_tokens", 6},
                       {"temperature", 1.3},
                       {"min_p", 0.2},
                       {"seed", 3},
                       {"logit_bias", {{"90", 100}}},
                       {"return_token_ids", true}};
  const HttpReply f = http().post("/v1/completions", forced);
  ASSERT_EQ(f.status, 200) << f.body;
  EXPECT_EQ(ids_of(f.json["choices"][0]["token_ids"]), std::vector<int32_t>(6, 90));
  EXPECT_EQ(f.json["choices"][0]["text"], "ZZZZZZ");

  // allowed_token_ids: a classifier's answer among its labels, over both transports.
  json labels = plain;
  labels["allowed_token_ids"] = {89, 78};  // 'Y', 'N'
  labels["max_tokens"] = 3;
  const HttpReply l = http().post("/v1/completions", labels);
  ASSERT_EQ(l.status, 200) << l.body;
  for (int32_t id : ids_of(l.json["choices"][0]["token_ids"])) EXPECT_TRUE(id == 89 || id == 78);
  v1::GenerateRequest gl = grpc_request(tasks_[2], "penalties", 3);
  gl.mutable_params()->add_allowed_token_ids(89);
  gl.mutable_params()->add_allowed_token_ids(78);
  auto label_want = client_->generate(gl);
  ASSERT_TRUE(label_want.ok());
  EXPECT_EQ(ids_of(l.json["choices"][0]["token_ids"]), grpc_ids(*label_want));
}

struct ErrorCase {
  std::string name;
  std::string path;
  std::string body;
  int status;
  std::string param;  // "" → null
  std::string code;   // "" → null
  std::string message_part;
};

TEST_F(HttpTest, ErrorsHaveTheirStatusAndOpenAisShape) {
  const std::vector<ErrorCase> cases = {
      {"malformed JSON", "/v1/completions", "{\"prompt\": ", 400, "", "", "not valid JSON"},
      {"nested too deep", "/v1/completions",
       "{\"prompt\": \"x\", \"a\": " + std::string(100, '[') + std::string(100, ']') + "}", 400, "",
       "", "--max-json-depth"},
      {"not an object", "/v1/completions", "[1]", 400, "", "", "JSON object"},
      {"n 0", "/v1/completions", R"({"prompt": "x", "n": 0})", 400, "n", "", "'n'"},
      {"n past the choices", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "n": 500})", 400, "n", "", "'n'"},
      {"best_of", "/v1/completions", R"({"prompt": "x", "best_of": 2})", 400, "best_of", "",
       "best_of"},
      {"echo", "/v1/completions", R"({"prompt": "x", "echo": true})", 400, "echo", "", "echo"},
      {"tools", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", 400,
       "tools", "", "tools"},
      {"unknown model", "/v1/completions", R"({"model": "nope", "prompt": "x"})", 404, "model",
       "model_not_found", "'nope'"},
      {"model that cannot be a task", "/v1/completions", R"({"model": "a/b\n", "prompt": "x"})",
       404, "model", "model_not_found", "'a/b\\n'"},
      // The engine's checks name the field in `param` too.
      {"temperature", "/v1/completions", R"({"prompt": "x", "temperature": -1})", 400,
       "temperature", "", "temperature"},
      {"top_p", "/v1/completions", R"({"prompt": "x", "top_p": 1.5})", 400, "top_p", "", "top_p"},
      {"max_tokens 0", "/v1/completions", R"({"prompt": "x", "max_tokens": 0})", 400, "max_tokens",
       "", "max_tokens"},
      {"max_tokens past the context", "/v1/completions", R"({"prompt": "x", "max_tokens": 500})",
       400, "max_tokens", "context_length_exceeded", "max_tokens"},
      {"prompt past the context", "/v1/completions",
       R"({"prompt": ")" + std::string(300, 'x') + R"("})", 400, "prompt",
       "context_length_exceeded", "context holds"},
      {"chat past the context", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": ")" + std::string(300, 'x') + R"("}]})", 400,
       "messages", "context_length_exceeded", "context holds"},
      {"token outside the vocabulary", "/v1/completions", R"({"prompt": [5, 300]})", 400, "prompt",
       "", "vocabulary"},
      {"empty stop", "/v1/completions", R"({"prompt": "x", "stop": [""]})", 400, "stop", "",
       "stop"},
      {"logit_bias outside the vocabulary", "/v1/completions",
       R"({"prompt": "x", "logit_bias": {"300": 1}})", 400, "logit_bias", "", "vocabulary"},
      {"logit_bias out of range", "/v1/completions",
       R"({"prompt": "x", "logit_bias": {"30": -101}})", 400, "logit_bias", "", "[-100, 100]"},
      {"allowed_token_ids outside the vocabulary", "/v1/completions",
       R"({"prompt": "x", "allowed_token_ids": [65, 256]})", 400, "allowed_token_ids", "",
       "vocabulary"},
      {"min_tokens past max_tokens", "/v1/completions",
       R"({"prompt": "x", "max_tokens": 3, "min_tokens": 4})", 400, "min_tokens", "",
       "min_tokens 4 is more than max_tokens 3"},
      {"repetition_penalty 0", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "repetition_penalty": 0})", 400,
       "repetition_penalty", "", "repetition_penalty"},
      {"wrong type", "/v1/completions", R"({"prompt": "x", "max_tokens": "3"})", 400, "max_tokens",
       "", "integer"},
      {"no route", "/v1/embeddings", R"({"input": "x"})", 404, "", "", "no route"},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    const HttpReply r = http().post_raw(c.path, c.body);
    EXPECT_EQ(r.status, c.status) << r.body;
    ASSERT_TRUE(r.json.is_object()) << r.body;
    const json& e = r.json["error"];
    ASSERT_TRUE(e.is_object()) << r.body;
    EXPECT_EQ(e.size(), 4u) << r.body;
    EXPECT_EQ(e["type"], c.status == 429 ? "rate_limit_error" : "invalid_request_error");
    EXPECT_EQ(e["param"], c.param.empty() ? json(nullptr) : json(c.param)) << r.body;
    EXPECT_EQ(e["code"], c.code.empty() ? json(nullptr) : json(c.code)) << r.body;
    EXPECT_NE(e["message"].get<std::string>().find(c.message_part), std::string::npos) << r.body;
  }
  // A body past the limit (16 MiB by default) is 413 before it is parsed.
  const HttpReply big = http().post_raw("/v1/completions", std::string(17u << 20, ' '));
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(big.json["error"]["type"], "invalid_request_error");
  // A chunked body has no length to check up front: it is cut off at the limit, not buffered
  // whole (Debian's cpp-httplib would buffer it all).
  signal(SIGPIPE, SIG_IGN);  // the client writes on after the server has closed
  httplib::Client raw("http://" + server_->http_address());
  raw.set_read_timeout(60, 0);
  size_t offered = 0;
  const std::string chunk(1u << 20, ' ');
  auto chunked = raw.Post(
      "/v1/completions",
      [&](size_t, httplib::DataSink& sink) {
        if (offered >= (64u << 20)) {
          sink.done();
          return true;
        }
        offered += chunk.size();
        return sink.write(chunk.data(), chunk.size());
      },
      "application/json");
  // The server answers 413 and closes; the client sees that answer, or a failed write when
  // the close came first.
  if (chunked) {
    EXPECT_EQ(chunked->status, 413) << chunked->body;
    EXPECT_NE(chunked->body.find("--max-request-bytes"), std::string::npos) << chunked->body;
  }
  EXPECT_LT(offered, 64u << 20) << "the server read the whole chunked body";
  // JSON sent as a form (curl -d) past the library's 8 KiB form cap is still JSON.
  json form = {{"model", tasks_[0]},
               {"prompt", "hello world"},
               {"temperature", 0},
               {"max_tokens", 4},
               {"user", std::string(9000, 'u')}};
  const HttpReply as_form =
      http().post_raw("/v1/completions", form.dump(), "application/x-www-form-urlencoded");
  EXPECT_EQ(as_form.status, 200) << as_form.body;
  // The server is unharmed.
  EXPECT_EQ(http().get("/health").status, 200);
}

TEST_F(HttpTest, ChatStreamsTheRoleThenTheContent) {
  const json body = {{"model", tasks_[2]},
                     {"messages", {{{"role", "user"}, {"content", "hi there"}}}},
                     {"max_tokens", 12},
                     {"temperature", 0},
                     {"return_token_ids", true}};
  const HttpReply whole = http().post("/v1/chat/completions", body);
  ASSERT_EQ(whole.status, 200) << whole.body;
  EXPECT_EQ(whole.json["object"], "chat.completion");
  EXPECT_TRUE(whole.json["id"].get<std::string>().starts_with("chatcmpl-"));
  const json& message = whole.json["choices"][0]["message"];
  EXPECT_EQ(message["role"], "assistant");
  auto want = client_->generate(grpc_request(tasks_[2], "<user>hi there\n<assistant>", 12));
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  EXPECT_EQ(message["content"], want->text());
  EXPECT_EQ(ids_of(whole.json["choices"][0]["token_ids"]), grpc_ids(*want));
  EXPECT_EQ(whole.json["usage"]["prompt_tokens"], want->usage().prompt_tokens());

  json streamed = body;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  std::vector<SseEvent> events;
  const HttpReply r = http().stream("/v1/chat/completions", streamed, [&](const SseEvent& e) {
    events.push_back(e);
    return true;
  });
  ASSERT_EQ(r.status, 200);
  ASSERT_GE(events.size(), 4u);  // role, content..., usage, [DONE]
  EXPECT_EQ(events.back().data, "[DONE]");
  const json& first = events[0].json;
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  std::string content;
  std::vector<int32_t> ids;
  std::string finish;
  for (size_t i = 1; i + 2 < events.size(); ++i) {
    const json& c = events[i].json["choices"][0];
    EXPECT_FALSE(c["delta"].contains("role")) << events[i].data;
    content += c["delta"].value("content", "");
    for (int32_t id : ids_of(c["token_ids"])) ids.push_back(id);
    if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
  }
  EXPECT_EQ(content, want->text());
  EXPECT_EQ(ids, grpc_ids(*want));
  EXPECT_EQ(finish, whole.json["choices"][0]["finish_reason"]);
  const json& usage = events[events.size() - 2].json;
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"], whole.json["usage"]);
}

// vLLM's /tokenize and /detokenize: a prompt's tokens as gRPC's Tokenize gives them and as a
// completion counts them, a chat's as the chat completion counts them, and back to the text.
TEST_F(HttpTest, TokenizeAndDetokenizeAsVllmDoes) {
  const std::string prompt = "tokens, please";
  const HttpReply t = http().post(
      "/tokenize", {{"model", tasks_[1]}, {"prompt", prompt}, {"return_token_strs", true}});
  ASSERT_EQ(t.status, 200) << t.body;
  const std::vector<int32_t> ids = ids_of(t.json["tokens"]);
  auto want = client_->tokenize(prompt, true);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(ids, std::vector<int32_t>(want->token_ids().begin(), want->token_ids().end()));
  EXPECT_EQ(t.json["count"], ids.size());
  EXPECT_EQ(t.json["max_model_len"], 128);
  ASSERT_EQ(t.json["token_strs"].size(), ids.size());
  const HttpReply c =
      http().post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 3}, {"temperature", 0}});
  ASSERT_EQ(c.status, 200) << c.body;
  EXPECT_EQ(c.json["usage"]["prompt_tokens"], ids.size());
  const HttpReply d = http().post("/detokenize", {{"tokens", ids}});
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(d.json["prompt"], prompt);

  const json messages = json::array({{{"role", "user"}, {"content", "hi"}}});
  const HttpReply chat = http().post("/tokenize", {{"messages", messages}});
  ASSERT_EQ(chat.status, 200) << chat.body;
  EXPECT_EQ(chat.json["count"], std::string("<user>hi\n<assistant>").size());
  EXPECT_FALSE(chat.json.contains("token_strs"));
  const HttpReply rendered = http().post("/detokenize", {{"tokens", chat.json["tokens"]}});
  EXPECT_EQ(rendered.json["prompt"], "<user>hi\n<assistant>");
  const HttpReply no_prompt =
      http().post("/tokenize", {{"messages", messages}, {"add_generation_prompt", false}});
  EXPECT_EQ(no_prompt.json["count"], std::string("<user>hi\n").size());

  // Errors name their field.
  const HttpReply list = http().post("/tokenize", {{"prompt", {"a", "b"}}});
  EXPECT_EQ(list.status, 400);
  EXPECT_EQ(list.json["error"]["param"], "prompt");
  const HttpReply unknown = http().post("/tokenize", {{"model", "no/such"}, {"prompt", "x"}});
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.json["error"]["code"], "model_not_found");
  const HttpReply negative = http().post("/detokenize", {{"tokens", {1, -2}}});
  EXPECT_EQ(negative.status, 400);
  EXPECT_EQ(negative.json["error"]["param"], "tokens");
  EXPECT_NE(negative.body.find("tokens[1]"), std::string::npos) << negative.body;
  const HttpReply past = http().post("/detokenize", {{"tokens", {1, 1 << 30}}});
  EXPECT_EQ(past.status, 400) << past.body;
  EXPECT_EQ(past.json["error"]["param"], "tokens");
  EXPECT_NE(past.body.find("tokens[1]"), std::string::npos) << past.body;
  const HttpReply longer = http().post("/detokenize", {{"tokens", std::vector<int32_t>(129, 5)}});
  EXPECT_EQ(longer.status, 400) << longer.body;
  EXPECT_EQ(longer.json["error"]["param"], "tokens");
  EXPECT_EQ(http().post("/detokenize", {{"tokens", std::vector<int32_t>(128, 5)}}).status, 200);
}

TEST_F(HttpTest, ChatMessagesAreCheckedBeforeTheTemplate) {
  const HttpReply r =
      http().post("/v1/chat/completions", {{"messages", {{{"role", 5}, {"content", "x"}}}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json["error"]["param"], "messages[0].role");
}

TEST(HttpStandalone, ApiKeyGuardsTheApiButNotHealth) {
  TempDir dir;
  ::setenv("LORASERVE_API_KEY", "k3y", 1);
  auto server =
      ServerProcess::start({"--model", kFixtureModel, "--served-model-name", "named"}, dir.path());
  ::unsetenv("LORASERVE_API_KEY");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const std::string address = (*server)->http_address();
  EXPECT_EQ(HttpClient(address).get("/health").status, 200);
  for (const std::string key : {"", "wrong", "k3y2", "K3Y"}) {
    const HttpReply r = HttpClient(address, key).get("/v1/models");
    EXPECT_EQ(r.status, 401) << key;
    EXPECT_EQ(r.json["error"]["code"], "invalid_api_key");
    EXPECT_EQ(HttpClient(address, key).post("/v1/completions", {{"prompt", {5}}}).status, 401);
    EXPECT_EQ(HttpClient(address, key).post("/detokenize", {{"tokens", {5}}}).status, 401);
    EXPECT_EQ(HttpClient(address, key).post("/tokenize", {{"prompt", "hi"}}).status, 401);
  }
  const HttpReply ok = HttpClient(address, "k3y").get("/v1/models");
  ASSERT_EQ(ok.status, 200);
  EXPECT_EQ(ok.json["data"][0]["id"], "named");
  const HttpReply c =
      HttpClient(address, "k3y")
          .post("/v1/completions", {{"model", "named"}, {"prompt", {5, 6}}, {"max_tokens", 2}});
  EXPECT_EQ(c.status, 200) << c.body;
  // No chat template: chat is a 400 that says so (completions work).
  const HttpReply chat =
      HttpClient(address, "k3y")
          .post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_EQ(chat.status, 400) << chat.body;
  EXPECT_NE(chat.body.find("no chat template"), std::string::npos) << chat.body;
  // A model without a tokenizer takes token ids only: text is a 400 naming the prompt.
  const HttpReply text = HttpClient(address, "k3y").post("/v1/completions", {{"prompt", "hi"}});
  EXPECT_EQ(text.status, 400);
  EXPECT_NE(text.body.find("tokenizer"), std::string::npos) << text.body;
  const HttpReply tokenize = HttpClient(address, "k3y").post("/tokenize", {{"prompt", "hi"}});
  EXPECT_EQ(tokenize.status, 400);
  EXPECT_NE(tokenize.body.find("no tokenizer.json"), std::string::npos) << tokenize.body;
}

// The threads of a process, from /proc.
int threads_of(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("Threads:")) return std::stoi(line.substr(8));
  }
  return -1;
}

// Connection threads start as connections need them, and the default pool holds every stream
// the server admits plus spares: with 300 connections open, more than the 256 threads of the
// fixed pool this replaced (each stuck in a request's headers, as a stream holds its thread),
// /health and /metrics still answer at once, and an idle server has not started them all.
TEST(HttpStandalone, HealthAnswersWhileManyConnectionsHoldThreads) {
  TempDir dir;
  auto server = ServerProcess::start({"--model", kFixtureModel}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const std::string address = (*server)->http_address();
  ASSERT_EQ(HttpClient(address).get("/health").status, 200);
  const int idle_threads = threads_of((*server)->pid());
  EXPECT_GT(idle_threads, 0);
  EXPECT_LT(idle_threads, 200) << "the HTTP threads should start as connections need them";

  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  ASSERT_EQ(inet_pton(AF_INET, address.substr(0, address.rfind(':')).c_str(), &to.sin_addr), 1);
  constexpr int kConnections = 300;
  std::vector<int> socks;
  for (int i = 0; i < kConnections; ++i) {
    const int sock = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(sock, 0);
    socks.push_back(sock);
    ASSERT_EQ(connect(sock, reinterpret_cast<const sockaddr*>(&to), sizeof(to)), 0);
    const std::string partial = "GET /health HTTP/1.1\r\nHost: x\r\n";  // headers never end
    ASSERT_EQ(send(sock, partial.data(), partial.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(partial.size()));
  }
  // Every connection reached a thread of its own (the few HTTP threads already started, such as
  // the one that answered the first /health, took some of them).
  const int target = idle_threads + kConnections - 8;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (threads_of((*server)->pid()) < target && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_GE(threads_of((*server)->pid()), target);
  const auto t0 = Clock::now();
  const HttpReply health = HttpClient(address).get("/health");
  EXPECT_EQ(health.status, 200) << health.body;
  EXPECT_EQ(HttpClient(address).get("/metrics").status, 200);
  const HttpReply c =
      HttpClient(address).post("/v1/completions", {{"prompt", {5, 6}}, {"max_tokens", 2}});
  EXPECT_EQ(c.status, 200) << c.body;
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  for (int sock : socks) close(sock);
}

TEST(HttpStandalone, HttpCanBeTurnedOff) {
  TempDir dir;
  auto server = ServerProcess::start({"--model", kFixtureModel, "--http-listen", ""}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  EXPECT_EQ((*server)->http_address(), "");
  EXPECT_NE((*server)->log().find("no HTTP"), std::string::npos);
}

#if defined(__SANITIZE_ADDRESS__)
#define LORASERVE_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LORASERVE_UNDER_ASAN 1
#endif
#endif
#ifndef LORASERVE_UNDER_ASAN
#define LORASERVE_UNDER_ASAN 0
#endif

// The peak resident memory of a process (VmHWM), in bytes; 0 when unreadable.
size_t peak_rss(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmHWM:")) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// Tokenizing a 4 MiB prompt of one word takes about 117 MiB at its peak; twelve at once, over
// HTTP and gRPC, took 1.4 GB. Each now waits for room in --max-preparing-bytes (here less than
// one prompt, so one at a time), and every one is still answered.
TEST(HttpStandalone, HugePromptsAtOnceArePreparedWithinTheBudget) {
  TempDir dir;
  const fs::path model = make_model(dir.path() / "model");
  auto server = ServerProcess::start(
      {"--model", model.string(), "--max-preparing-bytes", std::to_string(1 << 20)}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const pid_t pid = (*server)->pid();
  const size_t before = peak_rss(pid);
  ASSERT_GT(before, 0u);
  const std::string word((4 << 20) - 256, 'a');  // one word: the tokenizer's costliest input
  const std::string body = json{{"prompt", word}, {"max_tokens", 1}}.dump();
  constexpr int kHttp = 9, kGrpc = 3;
  std::vector<HttpReply> http(kHttp);
  std::vector<Status> grpc(kGrpc);
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kHttp + kGrpc; ++i) {
    threads.emplace_back([&, i] {
      while (!go.load()) std::this_thread::yield();
      if (i < kHttp) {
        http[i] = HttpClient((*server)->http_address()).post_raw("/v1/completions", body);
      } else {
        v1::GenerateRequest r;
        r.set_text(word);
        r.mutable_params()->set_max_tokens(1);
        grpc[i - kHttp] = client::Client(client_options(**server)).generate(r).status();
      }
    });
  }
  go.store(true);
  for (auto& t : threads) t.join();
  // Every prompt was tokenized and found longer than the model's context.
  for (const HttpReply& r : http) {
    EXPECT_EQ(r.status, 400) << r.body.substr(0, 300);
    EXPECT_EQ(r.json["error"]["code"], "context_length_exceeded") << r.body.substr(0, 300);
  }
  for (const Status& st : grpc) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string().substr(0, 300);
    EXPECT_NE(st.message().find("context"), std::string::npos) << st.message().substr(0, 300);
  }
#if LORASERVE_UNDER_ASAN
  GTEST_SKIP() << "under AddressSanitizer the server's peak memory holds its quarantine of freed "
                  "memory: the bound below is measured without it";
#endif
  const size_t grew = peak_rss(pid) - before;
  // One prompt's work (~117 MiB) and the bodies held meanwhile (12 x 4 MiB), with room to spare;
  // twelve prompts' work would be about 1.4 GB.
  EXPECT_LT(grew, size_t{600} << 20) << "peak grew by " << (grew >> 20) << " MiB";
  EXPECT_EQ(HttpClient((*server)->http_address()).get("/health").status, 200);
}

// gRPC requests are parsed and tokenized on the inference service's preparing threads, not on
// gRPC's, which also answer Health: while huge prompts wait for the preparing budget and are
// tokenized one at a time, a health check on the same port is answered at once. When gRPC's
// threads prepared them, 32 such prompts held a health check for 3.3 s of their 7.2 s.
TEST(HttpStandalone, HealthIsAnsweredWhileHugeGrpcPromptsArePrepared) {
  TempDir dir;
  const fs::path model = make_model(dir.path() / "model");
  auto server = ServerProcess::start(
      {"--model", model.string(), "--max-preparing-bytes", std::to_string(1 << 20)}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const client::Client probe(client_options(**server));
  ASSERT_TRUE(probe.health("", false).ok());     // connected before the prompts arrive
  const std::string word((4 << 20) - 256, 'a');  // one word: the tokenizer's costliest input
  constexpr int kGrpc = 16;
  std::vector<Status> results(kGrpc);
  std::atomic<int> finished{0};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < kGrpc; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest r;
      r.set_text(word);
      r.mutable_params()->set_max_tokens(1);
      results[i] = client::Client(client_options(**server)).generate(r).status();
      finished.fetch_add(1);
    });
  }
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  double slowest = 0;
  int checks = 0;
  while (finished.load() < kGrpc) {
    const auto t0 = std::chrono::steady_clock::now();
    auto health = probe.health("", false);
    slowest = std::max(slowest, seconds_since(t0));
    ++checks;
    ASSERT_TRUE(health.ok()) << health.status().to_string();
    EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const double total = seconds_since(start);
  for (auto& t : threads) t.join();
  for (const Status& st : results) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string().substr(0, 300);
  }
  // The checks overlapped the preparing, and none waited for a good part of it.
  EXPECT_GE(checks, 3) << "the prompts took " << total << " s";
  EXPECT_LT(slowest, total / 5) << "a health check took " << slowest << " s of the prompts' "
                                << total << " s";
}

// Long generations: a model with a 16k context, so that a request outlives anything the test
// does while it runs.
class HttpLongTest : public ServerSuite<HttpLongTest> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const fs::path model = make_model(dir_->path() / "long", 16384);
    // The adapter root lets the test read GetStats (Admin is off without one).
    start_suite_server({"--model", model.string(), "--max-queue", "2", "--max-batch-size", "4",
                        "--kv-cache-memory", "0.05", "--adapter-root",
                        (fs::path(kFixtureModel) / "adapters").string()});
  }
  static json long_request(int32_t max_tokens, bool stream) {
    return {{"prompt", "go"},
            {"max_tokens", max_tokens},
            {"ignore_eos", true},
            {"temperature", 0},
            {"stream", stream}};
  }
};

TEST_F(HttpLongTest, ClientThatHangsUpCancelsItsSequenceAndFreesItsBlocks) {
  constexpr int32_t kMax = 12000;
  int events = 0;
  std::string first;
  const HttpReply r = HttpClient(server_->http_address())
                          .stream("/v1/completions", long_request(kMax, true),
                                  [&](const SseEvent& e) {
                                    if (first.empty()) first = e.data;
                                    return ++events < 3;  // then hang up
                                  },
                                  {{"X-Request-Id", "hang-up"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(events, 3);
  EXPECT_NE(first, "[DONE]");
  ASSERT_TRUE(wait_idle(*client_)) << "the sequence still runs after the client left";
  auto stats = client_->stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->kv_blocks_used(), 0u);
  EXPECT_GT(stats->kv_blocks_free(), 0u);
  // Its log line (written by the request's thread once the engine's final update came, which
  // may be after the gauges above went to zero): cancelled, well before max_tokens.
  const std::string log = server_->log_with("request hang-up task (base)");
  const size_t at = log.find("request hang-up task (base)");
  ASSERT_NE(at, std::string::npos) << log_tail(*server_);
  const std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_NE(line.find("finish cancelled"), std::string::npos) << line;
  const int completion = std::stoi(line.substr(line.find("completion ") + 11));
  EXPECT_LT(completion, kMax) << line;
}

// A client that gives up on an answer sent whole (not streamed) cancels it: the server notices
// the closed connection while the handler waits, instead of generating 12,000 tokens for no one.
TEST_F(HttpLongTest, ClientThatHangsUpBeforeItsWholeAnswerCancelsIt) {
  constexpr int32_t kMax = 12000;
  const std::string address = server_->http_address();
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  ASSERT_EQ(inet_pton(AF_INET, address.substr(0, address.rfind(':')).c_str(), &to.sin_addr), 1);
  const int sock = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  ASSERT_EQ(connect(sock, reinterpret_cast<const sockaddr*>(&to), sizeof(to)), 0);
  const std::string body = long_request(kMax, false).dump();
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: gives-up\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(sock, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  const auto sent = Clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  // Nothing came back yet: the answer is far from whole.
  char byte;
  EXPECT_EQ(recv(sock, &byte, 1, MSG_DONTWAIT), -1);
  close(sock);  // gives up
  ASSERT_TRUE(wait_idle(*client_)) << "the sequence still runs after the client left";
  const std::string log = server_->log_with("request gives-up task (base)");
  const size_t at = log.find("request gives-up task (base)");
  ASSERT_NE(at, std::string::npos) << log_tail(*server_);
  const std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_NE(line.find("finish cancelled"), std::string::npos) << line;
  const int completion = std::stoi(line.substr(line.find("completion ") + 11));
  EXPECT_LT(completion, kMax) << line;
  EXPECT_LT(Clock::now() - sent, std::chrono::seconds(30)) << line;

  // A client that stays gets its whole answer, over the several checks (kWatchPeriod, 100 ms)
  // that the second or so of 3,000 tokens outlasts.
  const HttpReply whole = HttpClient(address).post("/v1/completions", long_request(3000, false));
  ASSERT_EQ(whole.status, 200) << whole.body.substr(0, 300);
  EXPECT_EQ(whole.json["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole.json["usage"]["completion_tokens"], 3000);
}

// `curl -N`: chunks arrive one by one, long before the request would end; killing curl cancels.
TEST_F(HttpLongTest, CurlSeesChunksOneByOne) {
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  const std::string url = "http://" + server_->http_address() + "/v1/completions";
  const std::string body = long_request(12000, true).dump();
  std::vector<std::string> argv = {"/usr/bin/curl",
                                   "-sS",
                                   "-N",
                                   "-H",
                                   "Content-Type: application/json",
                                   "-H",
                                   "X-Request-Id: curl-stream",
                                   "-d",
                                   body,
                                   url};
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipefd[0]);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ), 0)
      << "curl is needed (apt-get install curl)";
  posix_spawn_file_actions_destroy(&actions);
  close(pipefd[1]);
  // Read until three complete events are in: each arrives on its own while the request runs.
  std::string got;
  char buf[4096];
  std::vector<SseEvent> events;
  while (events.size() < 3) {
    const ssize_t n = read(pipefd[0], buf, sizeof buf);
    ASSERT_GT(n, 0) << "curl ended early: " << got;
    got.append(buf, static_cast<size_t>(n));
    events = parse_sse(got);
  }
  for (const SseEvent& e : events) {
    ASSERT_TRUE(e.json.is_object()) << e.data;
    EXPECT_TRUE(e.json["choices"][0]["finish_reason"].is_null());
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  close(pipefd[0]);
  ASSERT_TRUE(wait_idle(*client_));
  const std::string log = server_->log_with("request curl-stream task (base)");
  const size_t at = log.find("request curl-stream task (base)");
  ASSERT_NE(at, std::string::npos) << log_tail(*server_);
  const std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_NE(line.find("finish cancelled"), std::string::npos) << line;
}

TEST_F(HttpLongTest, FullQueueIs429) {
  // Two long streams fill --max-queue 2; the third request is refused.
  std::atomic<int> started{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> holders;
  for (int i = 0; i < 2; ++i) {
    holders.emplace_back([&] {
      bool first = true;  // counts holders streaming, not events (one may send many first)
      HttpClient(server_->http_address())
          .stream("/v1/completions", long_request(12000, true), [&](const SseEvent&) {
            if (first) started.fetch_add(1);
            first = false;
            return !stop.load();
          });
    });
  }
  while (started.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const HttpReply r =
      HttpClient(server_->http_address()).post("/v1/completions", long_request(5, false));
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_EQ(r.json["error"]["type"], "rate_limit_error");
  EXPECT_NE(r.json["error"]["message"].dump().find("max_queue"), std::string::npos) << r.body;
  stop.store(true);
  for (auto& t : holders) t.join();
  ASSERT_TRUE(wait_idle(*client_));
}

// SIGTERM: /health turns 503, new HTTP requests get 503, a stream still running at the drain
// timeout ends with an error event, and the process exits 0.
TEST(HttpDrain, SigtermCoversHttpCalls) {
  TempDir dir;
  const fs::path model = make_model(dir.path() / "long", 16384);
  auto server = ServerProcess::start(
      {"--model", model.string(), "--drain-timeout", "1", "--kv-cache-memory", "0.05"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const std::string address = (*server)->http_address();
  std::atomic<bool> streaming{false};
  std::vector<SseEvent> tail;
  auto stream = std::async(std::launch::async, [&] {
    return HttpClient(address).stream(
        "/v1/completions",
        {{"prompt", "go"}, {"max_tokens", 16000}, {"ignore_eos", true}, {"stream", true}},
        [&](const SseEvent& e) {
          streaming.store(true);
          tail.push_back(e);
          if (tail.size() > 3) tail.erase(tail.begin());
          return true;
        });
  });
  while (!streaming.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  (*server)->signal(SIGTERM);
  HttpReply health;
  for (int i = 0; i < 400; ++i) {
    health = HttpClient(address).get("/health");
    if (health.status == 503) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(health.status, 503);
  const HttpReply refused =
      HttpClient(address).post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}});
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(refused.json["error"]["type"], "server_error");
  const HttpReply r = stream.get();
  EXPECT_EQ(r.status, 200);
  ASSERT_GE(tail.size(), 2u);
  EXPECT_EQ(tail.back().data, "[DONE]");
  const json& error = tail[tail.size() - 2].json["error"];
  ASSERT_TRUE(error.is_object()) << tail[tail.size() - 2].data;
  EXPECT_NE(error["message"].get<std::string>().find("shutting down"), std::string::npos);
  EXPECT_EQ((*server)->wait(60), 0) << (*server)->log();
}

}  // namespace
}  // namespace loraserve::testing
