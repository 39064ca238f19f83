// GET /metrics of a real `loraserve serve`, read back by the reference parser
// (python3-prometheus-client): after a known workload through gRPC and HTTP (several tasks, the
// base model, an adapter loaded on demand, finish reasons length and stop, refusals), every
// per-task counter and histogram count equals what was sent, GetStats reports the same counters,
// and the info gauges name the model; while requests are held in flight, the LoRA info gauge
// (loraserve's and vLLM's name, which a Gateway API Inference Extension endpoint picker reads)
// shows the running and the waiting adapters.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "client/client.h"
#include "tests/integration/held_stream.h"
#include "tests/integration/http_client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"
#include "tests/server/exposition_parser.h"

namespace loraserve::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// What a task was sent and what came back, as the metrics must count it.
struct Expected {
  std::map<std::string, uint64_t> finished;  // finish reason → requests
  std::map<std::string, uint64_t> errors;    // code → requests
  uint64_t prompt_tokens = 0;
  uint64_t generation_tokens = 0;
  uint64_t with_token = 0;   // requests with >= 1 generated token (TTFT observed)
  uint64_t with_tokens = 0;  // requests with >= 2 (TPOT observed)
  uint64_t requests() const {
    uint64_t n = 0;
    for (const auto& [r, c] : finished) n += c;
    return n;
  }
  void add(const std::string& reason, size_t prompt, size_t generated) {
    ++finished[reason];
    prompt_tokens += prompt;
    generation_tokens += generated;
    with_token += generated >= 1;
    with_tokens += generated >= 2;
  }
};

std::string value(const json& parsed, const std::string& family, const std::string& sample,
                  const json& labels) {
  return testing::sample(parsed, family, sample, labels);
}

double number(const json& parsed, const std::string& family, const json& labels) {
  const std::string v = value(parsed, family, family, labels);
  EXPECT_EQ(v.find("(no"), std::string::npos) << v;
  return v.find("(no") == std::string::npos ? std::stod(v) : -1;
}

bool wait_idle(const client::Client& c) {
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    auto s = c.stats();
    if (s.ok() && s->requests_running() == 0 && s->requests_queued() == 0 &&
        s->requests_loading_adapter() == 0)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::have_reference_parser())
      GTEST_SKIP() << "no python3-prometheus-client (the reference parser)";
  }
  // A server on the fixture model (byte-level tokenizer) with t0, t1 preloaded and t2 on disk.
  std::unique_ptr<ServerProcess> start(std::vector<std::string> extra, int context = 128) {
    model_ = make_model_with_tokenizer(dir_.path() / "fixture-model");
    if (context != 128) {
      json config = json::parse(std::ifstream(model_ / "config.json"));
      config["max_position_embeddings"] = context;
      std::ofstream(model_ / "config.json") << config.dump(2);
    }
    const fs::path root = dir_.path() / "adapters";
    tasks_ = make_adapter_root(root, 3);
    std::vector<std::string> args = {"--model",        model_.string(),
                                     "--adapter-root", root.string(),
                                     "--preload",      "t0=" + (root / "t0").string(),
                                     "--preload",      "t1=" + (root / "t1").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto server = ServerProcess::start(args, dir_.path());
    EXPECT_TRUE(server.ok()) << server.status().to_string();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  TempDir dir_;
  fs::path model_;
  std::vector<std::string> tasks_;
};

v1::GenerateRequest grpc_request(const std::string& task, std::vector<int32_t> prompt,
                                 int32_t max_tokens) {
  v1::GenerateRequest r;
  r.set_task_id(task);
  r.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
  r.mutable_params()->set_max_tokens(max_tokens);
  r.mutable_params()->set_temperature(0.0f);
  r.mutable_params()->set_ignore_eos(true);
  return r;
}

TEST_F(MetricsTest, CountsEqualAKnownWorkloadThroughBothTransports) {
  auto server = start({});
  ASSERT_NE(server, nullptr);
  client::Client grpc(client_options(*server));
  HttpClient http(server->http_address());
  std::map<std::string, Expected> want;  // by task label

  // gRPC unary, three tasks and the base model; t2 loads on demand on its first request.
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 42, 99}, {100, 7, 8}, {60, 61}};
  for (const std::string task : {"t0", "t1", "t2", ""}) {
    for (size_t p = 0; p < prompts.size(); ++p) {
      const int32_t max_tokens = 3 + static_cast<int32_t>(p);
      auto r = grpc.generate(grpc_request(task, prompts[p], max_tokens));
      ASSERT_TRUE(r.ok()) << task << ": " << r.status().to_string();
      ASSERT_EQ(r->token_ids_size(), max_tokens);
      want[task].add("length", prompts[p].size(), static_cast<size_t>(max_tokens));
      if (task == "t2" && p == 0) {
        // The request that caused the load waited for it, and its TTFT says so.
        EXPECT_GT(r->timing().adapter_load_ms(), 0.0);
        EXPECT_GE(r->timing().time_to_first_token_ms(), r->timing().adapter_load_ms());
        EXPECT_GE(r->timing().queue_ms(), r->timing().adapter_load_ms());
      }
    }
  }
  // gRPC stream, ended by a stop token: the first token of t1's greedy answer to prompt 0.
  {
    auto plain = grpc.generate(grpc_request("t1", prompts[0], 6));
    ASSERT_TRUE(plain.ok());
    want["t1"].add("length", prompts[0].size(), 6);
    v1::GenerateRequest s = grpc_request("t1", prompts[0], 6);
    const int32_t stop = plain->token_ids(1);
    s.mutable_params()->add_stop_token_ids(stop);
    size_t got = 0;
    Status st = grpc.generate_stream(s, [&](const v1::GenerateStreamResponse& m) {
      got += static_cast<size_t>(m.token_ids_size());
      return true;
    });
    ASSERT_TRUE(st.ok()) << st.to_string();
    const size_t expected = plain->token_ids(0) == stop ? 1 : 2;  // the stop token is generated
    ASSERT_EQ(got, expected);
    want["t1"].add("stop", prompts[0].size(), got);
  }
  // HTTP: t0 and the base model by its served name, token-id prompts.
  for (const std::string model : {"t0", "fixture-model"}) {
    HttpReply r = http.post("/v1/completions", {{"model", model},
                                                {"prompt", prompts[1]},
                                                {"max_tokens", 4},
                                                {"temperature", 0},
                                                {"ignore_eos", true}});
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_EQ(r.json["usage"]["completion_tokens"], 4) << r.body;
    want[model == "t0" ? "t0" : ""].add("length", prompts[1].size(), 4);
  }
  // Refusals: an unknown task (both transports), a bad parameter for a served task.
  EXPECT_EQ(grpc.generate(grpc_request("nope", prompts[0], 2)).status().code(),
            StatusCode::kNotFound);
  ++want["(unknown)"].errors["NOT_FOUND"];
  HttpReply nope = http.post("/v1/completions", {{"model", "nope"}, {"prompt", prompts[0]}});
  EXPECT_EQ(nope.status, 404) << nope.body;
  ++want["(unknown)"].errors["NOT_FOUND"];
  auto bad = grpc_request("t0", prompts[0], 2);
  bad.mutable_params()->set_top_p(2.0f);
  EXPECT_EQ(grpc.generate(bad).status().code(), StatusCode::kInvalidArgument);
  ++want["t0"].errors["INVALID_ARGUMENT"];
  ASSERT_TRUE(wait_idle(grpc));

  HttpReply scrape = http.get("/metrics");
  ASSERT_EQ(scrape.status, 200);
  EXPECT_EQ(scrape.content_type, "text/plain; version=0.0.4; charset=utf-8");
  auto parsed = parse_exposition(scrape.body);
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  const json& p = *parsed;
  auto stats = grpc.stats();
  ASSERT_TRUE(stats.ok());
  std::map<std::string, const v1::TaskCounters*> grpc_tasks;
  for (const auto& t : stats->tasks()) grpc_tasks[t.task_id()] = &t;

  for (const auto& [task, w] : want) {
    SCOPED_TRACE("task '" + task + "'");
    const json t = {{"task", task}};
    for (const char* reason : {"length", "eos", "stop", "cancelled", "deadline", "error"}) {
      const uint64_t n = w.finished.count(reason) ? w.finished.at(reason) : 0;
      EXPECT_EQ(number(p, "loraserve_requests_total", {{"task", task}, {"finish_reason", reason}}),
                static_cast<double>(n))
          << reason;
    }
    for (const auto& [code, n] : w.errors) {
      EXPECT_EQ(number(p, "loraserve_request_errors_total", {{"task", task}, {"code", code}}),
                static_cast<double>(n))
          << code;
    }
    EXPECT_EQ(number(p, "loraserve_prompt_tokens_total", t), static_cast<double>(w.prompt_tokens));
    EXPECT_EQ(number(p, "loraserve_generation_tokens_total", t),
              static_cast<double>(w.generation_tokens));
    auto count = [&](const std::string& family) {
      return std::stod(value(p, family, family + "_count", t));
    };
    EXPECT_EQ(count("loraserve_e2e_request_latency_seconds"), static_cast<double>(w.requests()));
    EXPECT_EQ(count("loraserve_request_queue_time_seconds"), static_cast<double>(w.requests()));
    EXPECT_EQ(count("loraserve_time_to_first_token_seconds"), static_cast<double>(w.with_token));
    EXPECT_EQ(count("loraserve_time_per_output_token_seconds"), static_cast<double>(w.with_tokens));
    // GetStats reads the same counters.
    ASSERT_TRUE(grpc_tasks.count(task));
    const v1::TaskCounters& g = *grpc_tasks.at(task);
    EXPECT_EQ(g.requests(), w.requests());
    EXPECT_EQ(g.prompt_tokens(), w.prompt_tokens);
    EXPECT_EQ(g.completion_tokens(), w.generation_tokens);
    for (const auto& [reason, n] : w.finished) EXPECT_EQ(g.finish_reasons().at(reason), n);
    for (const auto& [code, n] : w.errors) EXPECT_EQ(g.errors().at(code), n);
  }
  EXPECT_EQ(grpc_tasks.size(), want.size());

  // Server-wide: idle now; two explicit loads (--preload) and one on demand.
  const json none = json::object();
  EXPECT_EQ(number(p, "loraserve_num_requests_running", none), 0.0);
  EXPECT_EQ(number(p, "loraserve_num_requests_waiting", none), 0.0);
  // Every request, refused or served, gave back what it claimed of --max-preparing-bytes.
  EXPECT_EQ(number(p, "loraserve_preparing_bytes", none), 0.0);
  EXPECT_EQ(number(p, "loraserve_num_requests_waiting_to_prepare", none), 0.0);
  EXPECT_EQ(number(p, "vllm:num_requests_waiting", none), 0.0);
  EXPECT_EQ(number(p, "vllm:kv_cache_usage_perc", none), 0.0);
  EXPECT_EQ(number(p, "loraserve_kv_cache_blocks_total", none),
            static_cast<double>(stats->kv_blocks_used() + stats->kv_blocks_free()));
  EXPECT_EQ(number(p, "loraserve_adapter_host_loads_total", {{"trigger", "explicit"}}), 2.0);
  EXPECT_EQ(number(p, "loraserve_adapter_host_loads_total", {{"trigger", "on_demand"}}), 1.0);
  EXPECT_EQ(stats->on_demand_loads(), 1u);
  EXPECT_EQ(stats->host_adapter_loads(), 3u);
  EXPECT_EQ(value(p, "loraserve_adapter_load_seconds", "loraserve_adapter_load_seconds_count",
                  {{"trigger", "on_demand"}}),
            "1.0");
  EXPECT_EQ(number(p, "loraserve_adapters_loaded", {{"tier", "host"}}), 3.0);
  EXPECT_EQ(number(p, "loraserve_adapters_loaded", {{"tier", "device"}}),
            static_cast<double>(stats->adapter_slots_used()));
  EXPECT_EQ(number(p, "loraserve_adapter_device_loads_total", none),
            static_cast<double>(stats->adapter_loads()));
  auto info = grpc.server_info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(number(p, "loraserve_model_info",
                   {{"model", "fixture-model"},
                    {"architecture", info->architecture()},
                    {"backend", info->backend()},
                    {"weight_dtype", info->weight_dtype()},
                    {"compute_dtype", info->compute_dtype()},
                    {"version", info->version()}}),
            1.0);
  EXPECT_EQ(number(p, "vllm:cache_config_info",
                   {{"block_size", std::to_string(info->limits().kv_block_size())},
                    {"num_gpu_blocks", std::to_string(info->limits().kv_blocks())}}),
            1.0);
}

// While t0 runs (one sequence per step) and t1 and t2 wait behind it, both LoRA info gauges say
// so; their value is the Unix time of the last change. Should t0's 16000 tokens end before the
// scrapes see that state (a fast machine), the attempt starts over, at most 5 times.
TEST_F(MetricsTest, LoraInfoShowsRunningAndWaitingAdapters) {
  // A long context so that t0's request runs long enough to be seen (it is cancelled then).
  auto server = start({"--max-batch-size", "1", "--max-device-adapters", "4"}, 16384);
  ASSERT_NE(server, nullptr);
  client::Client grpc(client_options(*server));
  HttpClient http(server->http_address());
  const double started =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string want_labels =
      R"({running_lora_adapters="t0",waiting_lora_adapters="t1,t2",max_lora="4"})";
  std::string seen;
  bool observed = false;
  for (int attempt = 0; attempt < 5 && !observed; ++attempt) {
    HeldStream t0(grpc, grpc_request("t0", {1, 2, 3}, 16000));
    ASSERT_TRUE(wait_for([&] { return t0.started() || t0.ended(); }));
    // t0 runs; t1 and t2 (loaded on demand the first time) queue behind it.
    HeldStream t1(grpc, grpc_request("t1", {1, 2, 3}, 16000));
    HeldStream t2(grpc, grpc_request("t2", {1, 2, 3}, 16000));
    ASSERT_TRUE(wait_for([&] {
      seen = http.get("/metrics").body;
      observed = seen.find("vllm:lora_requests_info" + want_labels) != std::string::npos;
      return observed || t0.ended();
    }));
    t0.release();
    t1.release();
    t2.release();
    ASSERT_TRUE(wait_idle(grpc));
  }
  ASSERT_TRUE(observed) << "t0 ended before a scrape saw it running, 5 times\n" << seen;
  auto parsed = parse_exposition(seen);
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  const json labels = {
      {"running_lora_adapters", "t0"}, {"waiting_lora_adapters", "t1,t2"}, {"max_lora", "4"}};
  for (const char* name : {"loraserve_lora_requests_info", "vllm:lora_requests_info"}) {
    ASSERT_EQ((*parsed)["families"][name]["samples"].size(), 1u) << name << "\n" << seen;
    const double changed = number(*parsed, name, labels);
    EXPECT_GE(changed, started - 1) << name;
    EXPECT_LE(changed, started + 600) << name;
  }
  EXPECT_EQ(number(*parsed, "vllm:num_requests_running", json::object()), 1.0);
  EXPECT_EQ(number(*parsed, "vllm:num_requests_waiting", json::object()), 2.0);
  EXPECT_EQ(number(*parsed, "loraserve_num_requests_running", json::object()), 1.0);
  EXPECT_EQ(number(*parsed, "loraserve_num_requests_waiting", json::object()), 2.0);
  // Idle again: no adapter running or waiting.
  parsed = parse_exposition(http.get("/metrics").body);
  ASSERT_TRUE(parsed.ok());
  EXPECT_GT(
      number(*parsed, "vllm:lora_requests_info",
             {{"running_lora_adapters", ""}, {"waiting_lora_adapters", ""}, {"max_lora", "4"}}),
      0.0);
}

// --metrics-max-tasks 2: the first two tasks that count get their own series, every later one
// shares "(other)"; the base model never counts against the limit. GetStats agrees (it lists
// the tasks with requests).
TEST_F(MetricsTest, TasksPastTheLimitShareOneSeries) {
  auto server = start({"--metrics-max-tasks", "2"});
  ASSERT_NE(server, nullptr);
  client::Client grpc(client_options(*server));
  // t0, t1 (preloaded) and t2 (on demand), twice each in turn, then the base model.
  for (int round = 0; round < 2; ++round) {
    for (const std::string task : {"t0", "t1", "t2", ""}) {
      auto r = grpc.generate(grpc_request(task, {5, 6, 7}, 2));
      ASSERT_TRUE(r.ok()) << task << ": " << r.status().to_string();
    }
  }
  HttpClient http(server->http_address());
  auto parsed = parse_exposition(http.get("/metrics").body);
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  std::set<std::string> series;
  for (const json& sample : (*parsed)["families"]["loraserve_prompt_tokens_total"]["samples"])
    series.insert(sample[1]["task"].get<std::string>());
  // "(unknown)" is always written (at 0 here), so a dashboard finds it.
  EXPECT_EQ(series, (std::set<std::string>{"t0", "t1", "(other)", "", "(unknown)"}));
  EXPECT_EQ(number(*parsed, "loraserve_prompt_tokens_total", {{"task", "(unknown)"}}), 0.0);
  for (const std::string task : {"t0", "t1", "(other)", ""}) {
    EXPECT_EQ(number(*parsed, "loraserve_prompt_tokens_total", {{"task", task}}), 6.0) << task;
    EXPECT_EQ(
        number(*parsed, "loraserve_requests_total", {{"task", task}, {"finish_reason", "length"}}),
        2.0)
        << task;
  }
  auto stats = grpc.stats();
  ASSERT_TRUE(stats.ok());
  std::set<std::string> grpc_tasks;
  for (const auto& t : stats->tasks()) {
    grpc_tasks.insert(t.task_id());
    EXPECT_EQ(t.requests(), 2u) << t.task_id();
  }
  EXPECT_EQ(grpc_tasks, (std::set<std::string>{"t0", "t1", "(other)", ""}));
}

}  // namespace
}  // namespace loraserve::testing
