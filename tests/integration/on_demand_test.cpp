// Adapters loaded on a request's first use (--load-on-demand, the default with --adapter-root),
// against a real `loraserve serve`: 200 distinct adapters on disk, Zipf-popular requests from
// 16 clients over gRPC and HTTP with 8 device slots and 32 host adapters: no errors, every
// answer equal to the same task loaded by hand (`loraserve generate --adapter`), every load and
// eviction counted alike in GetStats, /metrics and the log. Then: concurrent requests for one
// cold task share one load, the refusals (no such folder, a broken adapter, a link leading out
// of the root, a name that is not a folder name, on-demand loading turned off) with their codes,
// /v1/models listing what is registered, not what is merely on disk, and a request in flight
// keeping its adapter in a full host tier.
#include <gtest/gtest.h>

#include <fstream>
#include <future>
#include <random>
#include <set>
#include <sstream>
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
constexpr float kEps = 1e-3f;
constexpr int kAdapters = 200;
constexpr int kClients = 16;
constexpr int kRequestsPerClient = 30;
constexpr int32_t kMaxTokens = 8;

const std::vector<std::vector<int32_t>> kPrompts = {
    {5, 17, 42, 99}, {100, 7, 8, 9, 10, 11}, {250, 3, 77}, {60, 61, 62, 63, 64}};

// `n` distinct adapters of the fixture model under `root`, a0..a<n-1>: the fixture's four
// adapters (ranks 4 to 16, different projections) in turn, each copy with its own lora_alpha
// scale (0.25, 0.3, ... up to 2.7), so that no two answer alike.
std::vector<std::string> write_adapters(const fs::path& root, int n) {
  const fs::path fixtures = fs::path(kFixtureModel) / "adapters";
  const std::vector<std::string> sources = {"all7_r8", "attn_r16_rslora", "mlp_r4_layer1",
                                            "regex_patterns"};
  std::vector<std::string> tasks;
  for (int i = 0; i < n; ++i) {
    tasks.push_back(fmt::format("a{}", i));
    copy_adapter(fixtures / sources[static_cast<size_t>(i) % sources.size()], root / tasks.back(),
                 0.25 + 0.05 * (i / static_cast<int>(sources.size())));
  }
  return tasks;
}

bool matches(const std::vector<int32_t>& tokens, const Reference& ref) {
  const size_t n = tokens_to_compare(ref, kEps);
  return tokens.size() >= n &&
         std::equal(ref.token_ids.begin(), ref.token_ids.begin() + static_cast<long>(n),
                    tokens.begin());
}

struct Call {
  int task = 0;
  size_t prompt = 0;
  bool http = false;
  Status status;
  std::vector<int32_t> tokens;
};

TEST(OnDemand, ZipfTrafficOverTwoHundredAdapters) {
  TempDir dir;
  const fs::path model = make_model_with_tokenizer(dir.path() / "fixture-model");
  const fs::path root = dir.path() / "adapters";
  const std::vector<std::string> tasks = write_adapters(root, kAdapters);

  // The workload, drawn up front: each client's tasks by Zipf 1.0 popularity, seeded.
  std::vector<double> weights;
  for (int k = 1; k <= kAdapters; ++k) weights.push_back(1.0 / k);
  std::vector<std::vector<Call>> calls(kClients);
  std::set<std::pair<int, size_t>> pairs;
  for (int c = 0; c < kClients; ++c) {
    std::mt19937 rng(static_cast<uint32_t>(c) + 1);
    std::discrete_distribution<int> zipf(weights.begin(), weights.end());
    for (int i = 0; i < kRequestsPerClient; ++i) {
      Call call;
      call.task = zipf(rng);
      call.prompt = static_cast<size_t>(rng() % kPrompts.size());
      call.http = c % 2 == 1;  // half the clients speak HTTP
      pairs.insert({call.task, call.prompt});
      calls[static_cast<size_t>(c)].push_back(call);
    }
  }
  std::set<int> distinct;
  for (const auto& [t, p] : pairs) distinct.insert(t);
  ASSERT_GT(distinct.size(), 40u) << "the workload must reach far beyond the 32 host adapters";

  // References: each (task, prompt) with the task loaded by hand, 50 adapters per process.
  std::map<std::pair<int, size_t>, Reference> refs;
  for (int first = 0; first < kAdapters; first += 50) {
    std::vector<std::string> adapters;
    std::vector<json> lines;
    std::vector<std::pair<int, size_t>> keys;
    for (const auto& [t, p] : pairs) {
      if (t < first || t >= first + 50) continue;
      lines.push_back({{"prompt_token_ids", kPrompts[p]},
                       {"max_tokens", kMaxTokens},
                       {"temperature", 0},
                       {"task", tasks[static_cast<size_t>(t)]}});
      keys.push_back({t, p});
    }
    if (lines.empty()) continue;
    for (int t = first; t < std::min(first + 50, kAdapters); ++t)
      adapters.push_back(tasks[static_cast<size_t>(t)] + "=" + (root / tasks[t]).string());
    auto out = run_generate(model.string(), adapters, lines, dir.path());
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    for (size_t i = 0; i < keys.size(); ++i) refs[keys[i]] = (*out)[i];
  }
  std::set<std::vector<int32_t>> answers;
  for (const auto& [key, ref] : refs)
    if (key.second == 0) answers.insert(ref.token_ids);
  size_t prompt0 = 0;
  for (const auto& [t, p] : pairs) prompt0 += p == 0;
  ASSERT_GE(answers.size() * 2, prompt0) << "the adapters must answer differently";

  auto server = ServerProcess::start({"--model", model.string(), "--adapter-root", root.string(),
                                      "--max-device-adapters", "8", "--max-host-adapters", "32"},
                                     dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  ServerProcess& s = **server;
  client::Client grpc(client_options(s));

  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      HttpClient http(s.http_address());
      for (Call& call : calls[static_cast<size_t>(c)]) {
        const std::string& task = tasks[static_cast<size_t>(call.task)];
        if (call.http) {
          HttpReply r = http.post("/v1/completions", {{"model", task},
                                                      {"prompt", kPrompts[call.prompt]},
                                                      {"max_tokens", kMaxTokens},
                                                      {"temperature", 0},
                                                      {"return_token_ids", true}});
          if (r.status != 200) {
            call.status = internal_error("HTTP {}: {}", r.status, r.body);
            continue;
          }
          call.tokens = r.json["choices"][0]["token_ids"].get<std::vector<int32_t>>();
        } else {
          v1::GenerateRequest req;
          req.set_task_id(task);
          req.mutable_token_ids()->mutable_ids()->Add(kPrompts[call.prompt].begin(),
                                                      kPrompts[call.prompt].end());
          req.mutable_params()->set_max_tokens(kMaxTokens);
          req.mutable_params()->set_temperature(0.0f);
          auto r = grpc.generate(req);
          call.status = r.status();
          if (r.ok()) call.tokens = {r->token_ids().begin(), r->token_ids().end()};
        }
      }
    });
  }
  for (auto& t : threads) t.join();

  int errors = 0, wrong = 0;
  for (const auto& client_calls : calls) {
    for (const Call& call : client_calls) {
      if (!call.status.ok()) {
        if (++errors <= 5) ADD_FAILURE() << tasks[call.task] << ": " << call.status.to_string();
        continue;
      }
      const Reference& ref = refs.at({call.task, call.prompt});
      if (!matches(call.tokens, ref) && ++wrong <= 5) {
        ADD_FAILURE() << tasks[call.task] << " prompt " << call.prompt << " ("
                      << (call.http ? "HTTP" : "gRPC") << ") differs from the reference";
      }
    }
  }
  EXPECT_EQ(errors, 0) << log_tail(s);
  EXPECT_EQ(wrong, 0);

  // Every load and eviction, counted alike by GetStats, /metrics and the log.
  auto stats = grpc.stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_GE(stats->on_demand_loads(), distinct.size());
  EXPECT_EQ(stats->host_adapter_loads(), stats->on_demand_loads());  // no explicit load
  EXPECT_LE(stats->adapters_on_host(), 32u);
  EXPECT_EQ(stats->on_demand_loads() - stats->host_adapter_evictions(), stats->adapters_on_host());
  EXPECT_GT(stats->host_adapter_evictions(), 0u);
  EXPECT_GT(stats->adapter_evictions(), 0u);  // device slots
  EXPECT_EQ(stats->adapter_load_failures(), 0u);
  uint64_t requests = 0;
  for (const auto& t : stats->tasks()) requests += t.requests();
  EXPECT_EQ(requests, static_cast<uint64_t>(kClients * kRequestsPerClient));
  if (have_reference_parser()) {
    auto parsed = parse_exposition(HttpClient(s.http_address()).get("/metrics").body);
    ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
    const json od = {{"trigger", "on_demand"}};
    EXPECT_EQ(sample(*parsed, "loraserve_adapter_host_loads_total",
                     "loraserve_adapter_host_loads_total", od),
              fmt::format("{:.1f}", static_cast<double>(stats->on_demand_loads())));
    EXPECT_EQ(sample(*parsed, "loraserve_adapter_load_seconds",
                     "loraserve_adapter_load_seconds_count", od),
              fmt::format("{:.1f}", static_cast<double>(stats->on_demand_loads())));
    EXPECT_EQ(sample(*parsed, "loraserve_adapter_host_evictions_total",
                     "loraserve_adapter_host_evictions_total", json::object()),
              fmt::format("{:.1f}", static_cast<double>(stats->host_adapter_evictions())));
  }
  const std::string log = s.log();
  size_t logged_loads = 0, logged_evictions = 0;
  for (size_t at = log.find("loaded on demand from"); at != std::string::npos;
       at = log.find("loaded on demand from", at + 1))
    ++logged_loads;
  for (size_t at = log.find("evicted from host memory"); at != std::string::npos;
       at = log.find("evicted from host memory", at + 1))
    ++logged_evictions;
  EXPECT_EQ(logged_loads, stats->on_demand_loads());
  EXPECT_EQ(logged_evictions, stats->host_adapter_evictions());
}

// One server: a0 preloaded; a1, a2 (good), broken (bad config) and escape (a link to an adapter
// outside the root) on disk.
class OnDemandErrors : public ServerSuite<OnDemandErrors> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const fs::path model = make_model_with_tokenizer(dir_->path() / "fixture-model");
    const fs::path root = dir_->path() / "adapters";
    write_adapters(root, 3);  // a0, a1, a2
    // The tensors of a rank-8 adapter under a config that says rank 5.
    copy_adapter(fs::path(kFixtureModel) / "adapters" / "all7_r8", root / "broken", 1.0);
    nlohmann::json config =
        nlohmann::json::parse(std::ifstream(root / "broken" / "adapter_config.json"));
    config["r"] = 5;
    std::ofstream(root / "broken" / "adapter_config.json") << config.dump(2);
    // A folder that is a link to a good adapter outside the root.
    copy_adapter(fs::path(kFixtureModel) / "adapters" / "all7_r8", dir_->path() / "outside", 1.0);
    fs::create_directory_symlink(dir_->path() / "outside", root / "escape");
    start_suite_server({"--model", model.string(), "--adapter-root", root.string(), "--preload",
                        "a0=" + (root / "a0").string()});
  }
  static v1::GenerateRequest request(const std::string& task) {
    v1::GenerateRequest r;
    r.set_task_id(task);
    r.mutable_token_ids()->mutable_ids()->Add(kPrompts[0].begin(), kPrompts[0].end());
    r.mutable_params()->set_max_tokens(4);
    r.mutable_params()->set_temperature(0.0f);
    return r;
  }
  static std::set<std::string> models() {
    HttpReply r = HttpClient(server_->http_address()).get("/v1/models");
    std::set<std::string> ids;
    for (const json& m : r.json["data"]) ids.insert(m["id"].get<std::string>());
    return ids;
  }
};

TEST_F(OnDemandErrors, RefusalsNameTheCauseAndChangeNothing) {
  const std::set<std::string> listed = models();
  EXPECT_TRUE(listed.count("a0") && !listed.count("a2")) << "registered, not what is on disk";
  auto before = client_->stats();
  ASSERT_TRUE(before.ok());
  auto missing = client_->generate(request("nowhere"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().to_string();
  auto broken = client_->generate(request("broken"));
  ASSERT_EQ(broken.status().code(), StatusCode::kInvalidArgument) << broken.status().to_string();
  EXPECT_NE(broken.status().message().find("broken/adapter_model.safetensors"), std::string::npos)
      << broken.status().message();
  EXPECT_EQ(broken.status().message().find(dir_->path().string()), std::string::npos)
      << "the error names files relative to the adapter root";
  auto escape = client_->generate(request("escape"));
  EXPECT_EQ(escape.status().code(), StatusCode::kPermissionDenied) << escape.status().to_string();
  EXPECT_EQ(escape.status().message().find(dir_->path().string()), std::string::npos)
      << "the error does not show the server's folders: " << escape.status().message();
  for (const char* bad : {"..", ".", "a/b", "../a1"}) {
    EXPECT_EQ(client_->generate(request(bad)).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  HttpClient http(server_->http_address());
  HttpReply r = http.post("/v1/completions", {{"model", "broken"}, {"prompt", kPrompts[0]}});
  EXPECT_EQ(r.status, 400) << r.body;
  r = http.post("/v1/completions", {{"model", "nowhere"}, {"prompt", kPrompts[0]}});
  EXPECT_EQ(r.status, 404) << r.body;
  r = http.post("/v1/completions", {{"model", "escape"}, {"prompt", kPrompts[0]}});
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(models(), listed);
  EXPECT_TRUE(client_->generate(request("a0")).ok());  // still served
  auto stats = client_->stats();
  ASSERT_TRUE(stats.ok());
  // "broken" was read once per request; nothing else reached the disk.
  EXPECT_EQ(stats->adapter_load_failures() - before->adapter_load_failures(), 2u);
  EXPECT_EQ(stats->on_demand_loads(), before->on_demand_loads());
  EXPECT_EQ(stats->adapters_on_host(), before->adapters_on_host());
}

TEST_F(OnDemandErrors, ConcurrentRequestsForAColdTaskShareOneLoad) {
  auto before = client_->stats();
  ASSERT_TRUE(before.ok());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&] { ok += client_->generate(request("a1")).ok() ? 1 : 0; });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 16);
  auto stats = client_->stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->on_demand_loads() - before->on_demand_loads(), 1u);
  EXPECT_TRUE(models().count("a1"));
  auto listed = client_->list_adapters();
  ASSERT_TRUE(listed.ok());
  for (const auto& a : listed->adapters()) EXPECT_EQ(a.loaded_on_demand(), a.task_id() == "a1");
}

// --max-host-adapters 1: while a request of an adapter loaded on demand is in flight, a cold
// task cannot evict it: its request waits (nothing else changes), and one that sets a short
// deadline ends with DEADLINE_EXCEEDED; once the held request ends, the waiting one's load evicts
// the adapter and it is answered. Should the held request (16000 tokens) end by itself before
// the cold requests were seen waiting (a fast machine), the attempt starts over with fresh tasks.
TEST(OnDemandHostTier, ARequestInFlightKeepsItsAdapterAndAColdTaskWaitsForIt) {
  TempDir dir;
  const fs::path model = make_model_with_tokenizer(dir.path() / "fixture-model");
  json config = json::parse(std::ifstream(model / "config.json"));
  config["max_position_embeddings"] = 16384;
  std::ofstream(model / "config.json") << config.dump(2);
  const fs::path root = dir.path() / "adapters";
  const std::vector<std::string> tasks = write_adapters(root, 15);
  auto server = ServerProcess::start(
      {"--model", model.string(), "--adapter-root", root.string(), "--max-host-adapters", "1"},
      dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::Client c(client_options(**server));
  client::ClientOptions impatient_options = client_options(**server);
  impatient_options.timeout_s = 0.5;
  client::Client impatient(impatient_options);
  auto request = [](const std::string& task, int32_t max_tokens) {
    v1::GenerateRequest r;
    r.set_task_id(task);
    r.mutable_token_ids()->mutable_ids()->Add(kPrompts[0].begin(), kPrompts[0].end());
    r.mutable_params()->set_max_tokens(max_tokens);
    r.mutable_params()->set_temperature(0.0f);
    r.mutable_params()->set_ignore_eos(true);
    return r;
  };
  auto listed = [&] {
    const HttpReply r = HttpClient((*server)->http_address()).get("/v1/models");
    std::set<std::string> ids;
    for (const json& m : r.json["data"]) ids.insert(m["id"].get<std::string>());
    return ids;
  };
  auto loading = [&] {
    auto s = c.stats();
    return s.ok() ? static_cast<int>(s->requests_loading_adapter()) : -1;
  };
  bool observed = false;
  for (size_t attempt = 0; attempt < 5 && !observed; ++attempt) {
    const std::string& held_task = tasks[3 * attempt];
    const std::string& cold_task = tasks[3 * attempt + 1];
    const std::string& late_task = tasks[3 * attempt + 2];
    HeldStream held(c, request(held_task, 16000));
    ASSERT_TRUE(wait_for([&] { return held.started() || held.ended(); }));
    auto before = c.stats();
    ASSERT_TRUE(before.ok());
    auto cold = std::async(std::launch::async, [&] { return c.generate(request(cold_task, 2)); });
    ASSERT_TRUE(wait_for([&] { return loading() == 1 || held.ended(); }));
    auto late = impatient.generate(request(late_task, 2));
    if (held.ended()) {  // inconclusive: the cold request may have loaded without waiting
      cold.wait();
      continue;
    }
    observed = true;
    EXPECT_EQ(late.status().code(), StatusCode::kDeadlineExceeded) << late.status().to_string();
    // The late request's wait ended on the server too; the cold one still waits.
    EXPECT_TRUE(wait_for([&] { return loading() == 1; })) << loading();
    EXPECT_EQ(cold.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
    EXPECT_EQ(listed(), (std::set<std::string>{"fixture-model", held_task}));
    held.release();
    auto answered = cold.get();
    ASSERT_TRUE(answered.ok()) << answered.status().to_string();
    EXPECT_EQ(answered->token_ids_size(), 2) << answered->DebugString();
    EXPECT_EQ(listed(), (std::set<std::string>{"fixture-model", cold_task}));
    auto after = c.stats();
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->host_adapter_evictions() - before->host_adapter_evictions(), 1u);
    EXPECT_EQ(after->on_demand_loads() - before->on_demand_loads(), 1u);
    EXPECT_EQ(after->adapters_on_host(), 1u);
    EXPECT_EQ(after->requests_loading_adapter(), 0u);
    bool evicted = false, waited = false;  // the log names both tasks
    std::istringstream log((*server)->log());
    for (std::string line; std::getline(log, line);) {
      evicted |= line.find("adapter task=" + held_task + " ") != std::string::npos &&
                 line.find("evicted from host memory") != std::string::npos;
      waited |= line.find("adapter task=" + cold_task + " waits for room") != std::string::npos;
    }
    EXPECT_TRUE(evicted) << log_tail(**server);
    EXPECT_TRUE(waited) << log_tail(**server);
  }
  EXPECT_TRUE(observed) << "the held request ended before the cold one was seen waiting, 5 times";
}

TEST(OnDemandOff, UnregisteredTasksAreNotFound) {
  TempDir dir;
  const fs::path root = dir.path() / "adapters";
  write_adapters(root, 1);
  auto server = ServerProcess::start(
      {"--model", kFixtureModel, "--adapter-root", root.string(), "--no-load-on-demand"},
      dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::Client c(client_options(**server));
  v1::GenerateRequest r;
  r.set_task_id("a0");
  r.mutable_token_ids()->mutable_ids()->Add(kPrompts[0].begin(), kPrompts[0].end());
  EXPECT_EQ(c.generate(r).status().code(), StatusCode::kNotFound);
  auto info = c.server_info();
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->limits().load_on_demand());
}

}  // namespace
}  // namespace loraserve::testing
