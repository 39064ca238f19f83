// A real `loraserve serve` on loopback with eight adapters: concurrent mixed-task requests
// match `loraserve generate`, streams concatenate to the unary result, the Admin views, health,
// reflection on both addresses, and loractl.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "client/client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

constexpr char kToken[] = "test-token";
constexpr int kTasks = 8;
constexpr float kEps = 1e-3f;  // fp32 compute (DESIGN.md)

class ServeTest : public ServerSuite<ServeTest> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    tasks_ = make_adapter_root(dir_->path() / "adapters", kTasks);
    std::vector<std::string> args = {
        "--model",       kFixtureModel, "--adapter-root",   (dir_->path() / "adapters").string(),
        "--admin-token", kToken,        "--max-batch-size", "16"};
    for (const auto& t : tasks_) {
      args.push_back("--preload");
      args.push_back(t + "=" + (dir_->path() / "adapters" / t).string());
    }
    start_suite_server(args, kToken);
  }

  static std::vector<std::string> adapter_flags() {
    std::vector<std::string> out;
    for (const auto& t : tasks_) out.push_back(t + "=" + (dir_->path() / "adapters" / t).string());
    return out;
  }

  static std::vector<std::string> tasks_;
};

std::vector<std::string> ServeTest::tasks_;

struct Case {
  std::string task;
  std::vector<int32_t> prompt;
  int32_t max_tokens = 0;
  bool stream = false;
};

v1::GenerateRequest to_request(const Case& c) {
  v1::GenerateRequest r;
  r.set_task_id(c.task);
  r.mutable_token_ids()->mutable_ids()->Add(c.prompt.begin(), c.prompt.end());
  r.mutable_params()->set_max_tokens(c.max_tokens);
  r.mutable_params()->set_temperature(0.0f);
  r.mutable_params()->set_logprobs(0);
  return r;
}

// The outcome of one request, gathered from Generate or from the pieces of GenerateStream.
struct Outcome {
  Status status;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  int messages = 0;
};

Outcome run_case(const client::Client& client, const Case& c) {
  Outcome o;
  if (!c.stream) {
    auto r = client.generate(to_request(c));
    o.status = r.status();
    if (!r.ok()) return o;
    o.tokens.assign(r->token_ids().begin(), r->token_ids().end());
    for (const auto& lp : r->logprobs()) o.logprobs.push_back(lp.logprob());
    o.finish = r->finish_reason();
    o.messages = 1;
    return o;
  }
  o.status = client.generate_stream(to_request(c), [&](const v1::GenerateStreamResponse& m) {
    o.tokens.insert(o.tokens.end(), m.token_ids().begin(), m.token_ids().end());
    for (const auto& lp : m.logprobs()) o.logprobs.push_back(lp.logprob());
    o.finish = m.finish_reason();
    ++o.messages;
    return true;
  });
  return o;
}

std::string finish_name(v1::FinishReason r) {
  return r == v1::FINISH_REASON_LENGTH ? "length"
         : r == v1::FINISH_REASON_EOS  ? "eos"
         : r == v1::FINISH_REASON_STOP ? "stop"
                                       : "other";
}

TEST_F(ServeTest, SixtyFourConcurrentRequestsMatchOfflineGenerate) {
  std::mt19937 rng(7);
  std::vector<Case> cases(64);
  std::vector<nlohmann::json> lines;
  for (size_t i = 0; i < cases.size(); ++i) {
    Case& c = cases[i];
    c.task = i % (kTasks + 1) == kTasks ? "" : tasks_[i % (kTasks + 1)];
    c.prompt.resize(4 + (i * 7) % 30);
    for (int32_t& id : c.prompt) id = 3 + static_cast<int32_t>(rng() % 253);
    c.max_tokens = 8 + static_cast<int32_t>(i % 17);
    c.stream = i % 2 == 1;
    lines.push_back({{"prompt_token_ids", c.prompt},
                     {"max_tokens", c.max_tokens},
                     {"temperature", 0},
                     {"task", c.task}});
  }
  auto refs = run_generate(kFixtureModel, adapter_flags(), lines, dir_->path());
  ASSERT_TRUE(refs.ok()) << refs.status().to_string();

  std::vector<Outcome> outcomes(cases.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < cases.size(); ++i)
    threads.emplace_back([&, i] { outcomes[i] = run_case(*client_, cases[i]); });
  for (auto& t : threads) t.join();

  size_t compared = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i) + " task '" + cases[i].task + "'");
    const Outcome& o = outcomes[i];
    const Reference& ref = (*refs)[i];
    ASSERT_TRUE(o.status.ok()) << o.status.to_string();
    const size_t n = tokens_to_compare(ref, kEps);
    ASSERT_GE(o.tokens.size(), n);
    ASSERT_EQ(o.logprobs.size(), o.tokens.size());
    for (size_t k = 0; k < n; ++k) {
      ASSERT_EQ(o.tokens[k], ref.token_ids[k]) << "token " << k;
      EXPECT_NEAR(o.logprobs[k], ref.logprobs[k], kEps) << "token " << k;
    }
    if (n == ref.token_ids.size()) {
      EXPECT_EQ(o.tokens.size(), ref.token_ids.size());
      EXPECT_EQ(finish_name(o.finish), ref.finish_reason);
    }
    compared += n;
  }
  // The comparison must cover most tokens, not vanish into near ties.
  EXPECT_GT(compared, 64u * 8u);
}

TEST_F(ServeTest, StreamPiecesArriveOneByOneAndConcatenateToTheUnaryResult) {
  Case c{tasks_[1], {5, 17, 42, 99, 100, 7}, 40, false};
  v1::GenerateRequest request = to_request(c);
  request.mutable_params()->set_ignore_eos(true);
  auto whole = client_->generate(request);
  ASSERT_TRUE(whole.ok()) << whole.status().to_string();
  ASSERT_EQ(whole->token_ids_size(), 40);

  std::vector<v1::GenerateStreamResponse> messages;
  std::vector<std::chrono::steady_clock::time_point> arrivals;
  Status st = client_->generate_stream(request, [&](const v1::GenerateStreamResponse& m) {
    messages.push_back(m);
    arrivals.push_back(std::chrono::steady_clock::now());
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_GE(messages.size(), 2u);
  std::vector<int32_t> streamed;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const bool last = i + 1 == messages.size();
    if (!last) {
      EXPECT_GE(m.token_ids_size(), 1) << "message " << i;
      EXPECT_EQ(m.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
      EXPECT_FALSE(m.has_usage());
    }
    EXPECT_EQ(m.logprobs_size(), m.token_ids_size());
    streamed.insert(streamed.end(), m.token_ids().begin(), m.token_ids().end());
  }
  EXPECT_EQ(streamed, std::vector<int32_t>(whole->token_ids().begin(), whole->token_ids().end()));
  const auto& last = messages.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 6u);
  EXPECT_EQ(last.usage().completion_tokens(), 40u);
  EXPECT_GT(last.timing().time_to_first_token_ms(), 0.0);
  EXPECT_LE(last.timing().time_to_first_token_ms(), last.timing().total_ms());
  EXPECT_LE(last.timing().queue_ms(), last.timing().time_to_first_token_ms());
  EXPECT_LT(arrivals.front(), arrivals.back());
  EXPECT_FALSE(last.request_id().empty());
}

TEST_F(ServeTest, RequestIdIsEchoedOrMadeUp) {
  Case c{"", {5, 6, 7}, 3, false};
  v1::GenerateRequest request = to_request(c);
  request.set_request_id("my-id-17");
  auto r = client_->generate(request);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->request_id(), "my-id-17");
  auto made_up = client_->generate(to_request(c));
  ASSERT_TRUE(made_up.ok());
  EXPECT_EQ(made_up->request_id().rfind("req-", 0), 0u) << made_up->request_id();
  EXPECT_NE(server_->log_with("request my-id-17 task (base) prompt 3 completion 3")
                .find("request my-id-17 task (base) prompt 3 completion 3"),
            std::string::npos);
}

TEST_F(ServeTest, ListAdaptersDescribesEachAdapter) {
  auto r = client_->list_adapters();
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_GE(r->adapters_size(), kTasks);
  const v1::AdapterInfo* t0 = nullptr;
  const v1::AdapterInfo* t1 = nullptr;
  for (const auto& a : r->adapters()) {
    if (a.task_id() == "t0") t0 = &a;
    if (a.task_id() == "t1") t1 = &a;
  }
  ASSERT_NE(t0, nullptr);
  ASSERT_NE(t1, nullptr);
  EXPECT_EQ(t0->max_rank(), 8u);
  EXPECT_EQ(t0->min_rank(), 8u);
  EXPECT_EQ(t0->lora_alpha(), 16.0);
  EXPECT_EQ(t0->target_modules_size(), 7);
  EXPECT_EQ(t0->path(), "t0");
  EXPECT_GT(t0->bytes(), 0u);
  EXPECT_GT(t0->loaded_at().seconds(), 1700000000);
  EXPECT_EQ(t1->max_rank(), 16u);
  EXPECT_EQ(t1->min_rank(), 4u);  // rank_pattern o_proj: 4
  EXPECT_TRUE(t1->use_rslora());
  EXPECT_EQ(t1->target_modules_size(), 4);
  EXPECT_EQ(t0->in_flight(), 0);
}

TEST_F(ServeTest, ServerInfoAndStatsReportTheModelAndCounters) {
  auto info = client_->server_info();
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_EQ(info->architecture(), "LlamaForCausalLM");
  EXPECT_EQ(info->vocab_size(), 256u);
  EXPECT_EQ(info->num_layers(), 2u);
  EXPECT_EQ(info->backend(), "cpu");
  EXPECT_FALSE(info->has_tokenizer());
  EXPECT_EQ(info->limits().max_batch_size(), 16u);
  EXPECT_EQ(info->limits().max_context(), 128u);
  EXPECT_GT(info->limits().kv_blocks(), 0u);
  EXPECT_FALSE(info->version().empty());

  // A snapshot with nothing running: one taken while an earlier request's end was delivered but
  // not yet published would count that request against this one.
  Result<v1::GetStatsResponse> before = client_->stats();
  for (int i = 0; i < 1000 && before.ok(); ++i) {
    if (before->requests_running() == 0 && before->requests_queued() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    before = client_->stats();
  }
  ASSERT_TRUE(before.ok()) << before.status().to_string();
  Case c{tasks_[2], {9, 8, 7, 6}, 5, false};
  v1::GenerateRequest request = to_request(c);
  request.mutable_params()->set_ignore_eos(true);
  ASSERT_TRUE(client_->generate(request).ok());
  // The request is counted with its final update; the engine's gauges (KV blocks, running) are a
  // snapshot published after each step: wait for both.
  Result<v1::GetStatsResponse> after = before;
  for (int i = 0; i < 1000 && after.ok(); ++i) {
    after = client_->stats();
    if (after.ok() && after->requests_finished() > before->requests_finished() &&
        after->kv_blocks_used() == 0 && after->requests_running() == 0)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(after.ok()) << after.status().to_string();
  EXPECT_EQ(after->requests_finished(), before->requests_finished() + 1);
  EXPECT_EQ(after->tokens_generated(), before->tokens_generated() + 5);
  EXPECT_EQ(after->kv_blocks_used(), 0u);
  EXPECT_EQ(after->requests_running(), 0u);
  auto count = [](const v1::GetStatsResponse& s, const std::string& task) -> uint64_t {
    for (const auto& t : s.tasks())
      if (t.task_id() == task) return t.completion_tokens();
    return 0;
  };
  EXPECT_EQ(count(*after, tasks_[2]), count(*before, tasks_[2]) + 5);
}

TEST_F(ServeTest, HealthAndReflectionOnBothAddresses) {
  auto overall = client_->health("", false);
  ASSERT_TRUE(overall.ok()) << overall.status().to_string();
  EXPECT_EQ(*overall, grpc::health::v1::HealthCheckResponse::SERVING);
  auto inference = client_->health("loraserve.v1.Inference", false);
  ASSERT_TRUE(inference.ok());
  EXPECT_EQ(*inference, grpc::health::v1::HealthCheckResponse::SERVING);
  auto admin = client_->health("loraserve.v1.Admin", true);
  ASSERT_TRUE(admin.ok());
  EXPECT_EQ(*admin, grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(client_->health("loraserve.v1.Admin", false).status().code(), StatusCode::kNotFound);

  auto services = reflection_services(server_->address());
  ASSERT_TRUE(services.ok()) << services.status().to_string();
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  EXPECT_TRUE(has(*services, "loraserve.v1.Inference"));
  EXPECT_TRUE(has(*services, "grpc.health.v1.Health"));
  EXPECT_FALSE(has(*services, "loraserve.v1.Admin"));
  auto admin_services = reflection_services(server_->admin_address());
  ASSERT_TRUE(admin_services.ok()) << admin_services.status().to_string();
  EXPECT_TRUE(has(*admin_services, "loraserve.v1.Admin"));
  EXPECT_TRUE(has(*admin_services, "grpc.health.v1.Health"));
  EXPECT_FALSE(has(*admin_services, "loraserve.v1.Inference"));
}

TEST_F(ServeTest, AdminIsNotServedOnTheInferenceAddress) {
  client::ClientOptions o = client_->options();
  o.admin_address = server_->address();
  client::Client wrong(o);
  EXPECT_EQ(wrong.list_adapters().status().code(), StatusCode::kUnimplemented);
}

TEST_F(ServeTest, LoractlCommandsWork) {
  const std::vector<std::string> base = {loractl_binary(), "--server", server_->address(),
                                         "--admin-server", server_->admin_address()};
  auto run = [&](std::vector<std::string> args, std::string* out) {
    std::vector<std::string> argv = base;
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, out, dir_->path() / "loractl.log");
  };
  std::string out;
  EXPECT_EQ(run({"health"}, &out), 0);
  EXPECT_EQ(out, "SERVING\n");

  ASSERT_EQ(run({"generate", "--json", "--task", tasks_[3], "--ids", "5,6,7", "--max-tokens", "6",
                 "--temperature", "0"},
                &out),
            0);
  const auto j = nlohmann::json::parse(out);
  Case c{tasks_[3], {5, 6, 7}, 6, false};
  auto direct = client_->generate(to_request(c));
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(j.at("token_ids").get<std::vector<int32_t>>(),
            std::vector<int32_t>(direct->token_ids().begin(), direct->token_ids().end()));
  EXPECT_EQ(j.at("finish_reason").get<std::string>(),
            v1::FinishReason_Name(direct->finish_reason()));

  ASSERT_EQ(run({"--token", kToken, "list", "--json"}, &out), 0);
  EXPECT_GE(nlohmann::json::parse(out).at("adapters").size(), static_cast<size_t>(kTasks));
  const fs::path log = dir_->path() / "loractl.log";
  fs::remove(log);
  EXPECT_EQ(run({"--token", "wrong", "list"}, &out), 1);
  std::ifstream log_in(log);
  const std::string errors((std::istreambuf_iterator<char>(log_in)), {});
  EXPECT_NE(errors.find("UNAUTHENTICATED"), std::string::npos) << errors;

  ASSERT_EQ(run({"--token", kToken, "--json", "load", "ctl_task", "t0"}, &out), 0);
  const auto loaded = nlohmann::json::parse(out);
  EXPECT_EQ(loaded.at("task_id").get<std::string>(), "ctl_task");
  EXPECT_EQ(loaded.at("path").get<std::string>(), "t0");
  const std::string version = loaded.at("version").get<std::string>();  // uint64: a JSON string
  ASSERT_EQ(run({"--token", kToken, "unload", "ctl_task"}, &out), 0);
  EXPECT_EQ(out, "unloaded ctl_task (version " + version + ")\n");
}

}  // namespace
}  // namespace loraserve::testing
