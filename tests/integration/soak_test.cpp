// Soak: one real server under LORASERVE_SOAK_CLIENTS (default 16) client threads for
// LORASERVE_SOAK_SECONDS (default 600; CI runs 60), streaming and unary requests mixed, greedy
// and sampled, some cancelled, some past a short deadline, some malformed, over the base model,
// three stable tasks and one task that an admin thread loads, replaces and unloads in a loop.
// Asserts: no unexpected error (the churning task may be NOT_FOUND while unloaded, a short
// deadline may pass, a malformed request is INVALID_ARGUMENT); no wrong answer (greedy answers of
// the stable tasks equal offline `loraserve generate`, the churning task's equal one of its two
// versions); no KV block held once idle; the stable tasks' versions unchanged; the server's RSS at
// the end within 5% of its RSS after warm-up. Prints its figures.
// Not in the default run (ctest configuration "soak"):
//   ctest --test-dir build -C soak -L soak --output-on-failure
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "client/client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr float kEps = 1e-3f;
constexpr int32_t kMaxTokens = 24;
constexpr double kMaxRssGrowth = 0.05;
const std::vector<std::string> kStableTasks = {"", "s0", "s1", "s2"};  // "" is the base model
constexpr char kChurn[] = "churn";

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

// The server's resident set in KiB, from /proc/<pid>/status; 0 when unreadable.
int64_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return 0;
}

bool matches(const std::vector<int32_t>& tokens, const Reference& ref) {
  const size_t n = std::min(tokens.size(), tokens_to_compare(ref, kEps));
  return std::equal(ref.token_ids.begin(), ref.token_ids.begin() + static_cast<long>(n),
                    tokens.begin());
}

// What the clients saw, added up; the first few problems kept whole.
struct Tally {
  std::mutex mu;
  std::map<std::string, int64_t> counts;  // by kind of outcome
  int64_t tokens = 0;
  std::vector<std::string> problems;
  int64_t problem_count = 0;

  void count(const std::string& what, int64_t tokens_seen = 0) {
    std::lock_guard<std::mutex> lock(mu);
    ++counts[what];
    tokens += tokens_seen;
  }
  void problem(std::string what) {
    std::lock_guard<std::mutex> lock(mu);
    ++problem_count;
    if (problems.size() < 20) problems.push_back(std::move(what));
  }
};

TEST(Soak, MixedTrafficWithAdapterChurnLeaksNothing) {
  const int seconds = env_int("LORASERVE_SOAK_SECONDS", 600);
  const int clients = env_int("LORASERVE_SOAK_CLIENTS", 16);
  ASSERT_GE(seconds, 10);
  ASSERT_GE(clients, 1);
  const auto warmup = std::chrono::seconds(std::max(10, seconds / 6));

  TempDir dir;
  const fs::path model = make_model_with_tokenizer(dir.path() / "model");
  const fs::path root = dir.path() / "adapters";
  const fs::path fixtures = fs::path(kFixtureModel) / "adapters";
  copy_adapter(fixtures / "all7_r8", root / "s0", 1.0);
  copy_adapter(fixtures / "attn_r16_rslora", root / "s1", 1.0);
  copy_adapter(fixtures / "regex_patterns", root / "s2", 1.0);
  copy_adapter(fixtures / "mlp_r4_layer1", root / "churn_a", 2.0);
  copy_adapter(fixtures / "all7_r8", root / "churn_b", 3.0);
  copy_adapter(fixtures / "attn_r16_rslora", root / "idle", 0.5);

  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 42, 99},
                                                     {100, 7, 8, 9, 10, 11},
                                                     {250, 3, 77},
                                                     {60, 61, 62, 63, 64, 65, 66},
                                                     {72, 101, 108, 108, 111},
                                                     {1, 2}};
  // Offline references: every stable task and both versions of the churning one.
  const std::vector<std::string> ref_tasks = {"", "s0", "s1", "s2", "churn_a", "churn_b"};
  std::vector<nlohmann::json> lines;
  for (const auto& task : ref_tasks) {
    for (const auto& p : prompts) {
      nlohmann::json line = {{"prompt_token_ids", p},
                             {"max_tokens", kMaxTokens},
                             {"temperature", 0},
                             {"ignore_eos", true}};
      if (!task.empty()) line["task"] = task;
      lines.push_back(line);
    }
  }
  std::vector<std::string> adapters;
  for (const auto& task : ref_tasks) {
    if (!task.empty()) adapters.push_back(task + "=" + (root / task).string());
  }
  auto refs = run_generate(model.string(), adapters, lines, dir.path());
  ASSERT_TRUE(refs.ok()) << refs.status().to_string();
  auto ref = [&](const std::string& task, size_t prompt) -> const Reference& {
    const auto t = static_cast<size_t>(std::find(ref_tasks.begin(), ref_tasks.end(), task) -
                                       ref_tasks.begin());
    return (*refs)[t * prompts.size() + prompt];
  };

  auto server = ServerProcess::start(
      {"--model", model.string(), "--adapter-root", root.string(), "--max-batch-size", "8",
       "--max-device-adapters", "3", "--preload", "s0=" + (root / "s0").string(), "--preload",
       "s1=" + (root / "s1").string(), "--preload", "s2=" + (root / "s2").string(), "--log-level",
       "warn"},
      dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::Client client(client_options(**server));
  client::ClientOptions hurried_options = client_options(**server);
  hurried_options.timeout_s = 0.05;
  client::Client hurried(hurried_options);
  auto versions_now = [&] {
    std::map<std::string, uint64_t> out;
    auto list = client.list_adapters();
    if (list.ok()) {
      for (const auto& a : list->adapters()) out[a.task_id()] = a.version();
    }
    return out;
  };
  const std::map<std::string, uint64_t> versions_before = versions_now();

  std::atomic<bool> stop{false};
  Tally tally;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      const std::vector<std::string> tasks = {"", "s0", kChurn, "s1", "s2", kChurn};
      for (uint64_t i = 0; !stop.load(); ++i) {
        const uint64_t k = i * static_cast<uint64_t>(clients) + static_cast<uint64_t>(c);
        const std::string task = tasks[k % tasks.size()];
        const size_t prompt = (k / 7) % prompts.size();
        const bool stream = k % 2 == 0;
        const bool sampled = k % 5 == 3;
        const bool cancel = stream && k % 16 == 4;
        const bool short_deadline = !stream && k % 29 == 9;
        const bool malformed = k % 37 == 11 && !short_deadline;  // one expected outcome each
        v1::GenerateRequest r;
        r.set_task_id(task);
        r.set_request_id("soak-" + std::to_string(k));
        r.mutable_token_ids()->mutable_ids()->Add(prompts[prompt].begin(), prompts[prompt].end());
        const auto max_tokens = static_cast<int32_t>(1 + (k * 7) % kMaxTokens);
        r.mutable_params()->set_max_tokens(max_tokens);
        r.mutable_params()->set_ignore_eos(true);
        if (sampled) {
          r.mutable_params()->set_temperature(0.8f);
          r.mutable_params()->set_top_p(0.9f);
          r.mutable_params()->set_seed(k);
          r.mutable_params()->set_logprobs(3);
        } else {
          r.mutable_params()->set_temperature(0.0f);
        }
        if (malformed) r.mutable_params()->set_top_p(1.5f);

        std::vector<int32_t> tokens;
        int logprobs = 0;
        v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
        Status st;
        if (stream) {
          st = client.generate_stream(r, [&](const v1::GenerateStreamResponse& m) {
            tokens.insert(tokens.end(), m.token_ids().begin(), m.token_ids().end());
            logprobs += m.logprobs_size();
            finish = m.finish_reason();
            return !cancel;
          });
        } else {
          auto g = (short_deadline ? hurried : client).generate(r);
          st = g.status();
          if (g.ok()) {
            tokens.assign(g->token_ids().begin(), g->token_ids().end());
            logprobs = g->logprobs_size();
            finish = g->finish_reason();
          }
        }
        const std::string what =
            fmt::format("request {} (task '{}', prompt {}, {}{}{}): ", r.request_id(), task, prompt,
                        stream ? "stream" : "unary", sampled ? ", sampled" : "",
                        malformed ? ", malformed" : "");
        if (malformed) {
          if (st.code() == StatusCode::kInvalidArgument) {
            tally.count("refused as malformed");
          } else {
            tally.problem(what + "expected INVALID_ARGUMENT, got " + st.to_string());
          }
          continue;
        }
        if (!st.ok()) {
          if (task == kChurn && st.code() == StatusCode::kNotFound) {
            tally.count("NOT_FOUND while the churning task was unloaded");
          } else if (cancel && st.code() == StatusCode::kCancelled) {
            tally.count("cancelled by the client", static_cast<int64_t>(tokens.size()));
          } else if (short_deadline && st.code() == StatusCode::kDeadlineExceeded) {
            tally.count("past a 50 ms deadline");
          } else {
            tally.problem(what + "unexpected " + st.to_string());
          }
          continue;
        }
        if (cancel) {  // finished before the cancellation landed
          tally.count("finished before its cancellation", static_cast<int64_t>(tokens.size()));
          continue;
        }
        if (static_cast<int32_t>(tokens.size()) != max_tokens ||
            finish != v1::FINISH_REASON_LENGTH) {
          tally.problem(what + fmt::format("{} tokens, finish {}; expected {}, LENGTH",
                                           tokens.size(), static_cast<int>(finish), max_tokens));
          continue;
        }
        if (sampled) {
          if (logprobs != max_tokens) {
            tally.problem(what + fmt::format("{} logprobs for {} tokens", logprobs, max_tokens));
          } else {
            tally.count("sampled, complete", max_tokens);
          }
          continue;
        }
        const bool right = task == kChurn ? matches(tokens, ref("churn_a", prompt)) ||
                                                matches(tokens, ref("churn_b", prompt))
                                          : matches(tokens, ref(task, prompt));
        if (!right) {
          tally.problem(what + "tokens differ from offline generate");
        } else {
          tally.count(task == kChurn ? "greedy, churning task, right" : "greedy, right",
                      max_tokens);
        }
      }
    });
  }

  std::atomic<int64_t> admin_ops{0};
  std::thread admin([&] {
    auto check = [&](const std::string& what, const Status& st) {
      admin_ops.fetch_add(1);
      if (!st.ok()) tally.problem("admin " + what + ": " + st.to_string());
    };
    for (int i = 0; !stop.load(); ++i) {
      check("load churn_a", client.load_adapter(kChurn, "churn_a", true).status());
      std::this_thread::sleep_for(std::chrono::milliseconds(40));
      check("replace with churn_b", client.load_adapter(kChurn, "churn_b", true).status());
      std::this_thread::sleep_for(std::chrono::milliseconds(40));
      check("unload churn", client.unload_adapter(kChurn).status());
      if (i % 5 == 0) {
        check("load idle", client.load_adapter("idle", "idle", false).status());
        check("unload idle", client.unload_adapter("idle").status());
      }
      check("stats", client.stats().status());
      check("list", client.list_adapters().status());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  const pid_t pid = (*server)->pid();
  const auto start = Clock::now();
  const int64_t rss_start = rss_kib(pid);
  int64_t rss_warm = 0, rss_peak = 0;
  for (int s = 1; s <= seconds; ++s) {
    std::this_thread::sleep_until(start + std::chrono::seconds(s));
    const int64_t rss = rss_kib(pid);
    rss_peak = std::max(rss_peak, rss);
    if (rss_warm == 0 && Clock::now() - start >= warmup) rss_warm = rss;
    if (s % 60 == 0) {
      std::lock_guard<std::mutex> lock(tally.mu);
      std::cout << "soak: " << s << " s, " << tally.tokens << " tokens, RSS " << rss
                << " KiB, problems " << tally.problem_count << std::endl;
    }
  }
  stop.store(true);
  for (auto& t : threads) t.join();
  admin.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  // Idle: every sequence ended; no KV block may still be held.
  v1::GetStatsResponse stats;
  for (int i = 0; i < 500; ++i) {
    auto s = client.stats();
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    stats = *s;
    if (stats.requests_running() == 0 && stats.requests_queued() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int64_t rss_end = rss_kib(pid);
  EXPECT_EQ(stats.requests_running(), 0u);
  EXPECT_EQ(stats.requests_queued(), 0u);
  EXPECT_EQ(stats.kv_blocks_used(), 0u) << "KV blocks leaked";
  std::map<std::string, uint64_t> versions_after = versions_now();
  versions_after.erase(kChurn);
  EXPECT_EQ(versions_after, versions_before) << "the stable tasks changed";
  // Still answering right after the soak.
  for (size_t p = 0; p < prompts.size(); ++p) {
    v1::GenerateRequest r;
    r.set_task_id("s1");
    r.mutable_token_ids()->mutable_ids()->Add(prompts[p].begin(), prompts[p].end());
    r.mutable_params()->set_max_tokens(kMaxTokens);
    r.mutable_params()->set_temperature(0.0f);
    r.mutable_params()->set_ignore_eos(true);
    auto g = client.generate(r);
    ASSERT_TRUE(g.ok()) << g.status().to_string();
    EXPECT_TRUE(matches({g->token_ids().begin(), g->token_ids().end()}, ref("s1", p)));
  }

  int64_t requests = 0, right = 0;
  for (const auto& [what, n] : tally.counts) {
    requests += n;
    if (what.find("right") != std::string::npos) right += n;
  }
  requests += tally.problem_count;
  std::cout << "soak: " << clients << " clients for " << elapsed << " s: " << requests
            << " requests (" << static_cast<double>(requests) / elapsed << " req/s), "
            << tally.tokens << " tokens (" << static_cast<double>(tally.tokens) / elapsed
            << " tokens/s), " << admin_ops.load() << " admin calls\n";
  for (const auto& [what, n] : tally.counts) std::cout << "  " << n << "  " << what << "\n";
  std::cout << "  " << tally.problem_count << "  unexpected errors or wrong answers\n";
  std::cout << "soak: RSS " << rss_start << " KiB at start, " << rss_warm << " KiB after "
            << warmup.count() << " s of warm-up, " << rss_peak << " KiB peak, " << rss_end
            << " KiB at the end ("
            << fmt::format("{:+.2f}%", 100.0 * static_cast<double>(rss_end - rss_warm) /
                                           static_cast<double>(std::max<int64_t>(rss_warm, 1)))
            << " after warm-up); KV blocks used at the end " << stats.kv_blocks_used() << "\n";
  for (const std::string& p : tally.problems) ADD_FAILURE() << p;
  EXPECT_EQ(tally.problem_count, 0);
  EXPECT_GE(right, 100);
  ASSERT_GT(rss_warm, 0);
  EXPECT_LT(static_cast<double>(rss_end - rss_warm), kMaxRssGrowth * static_cast<double>(rss_warm))
      << "RSS grew from " << rss_warm << " KiB to " << rss_end << " KiB after warm-up";
  if (HasFailure()) std::cerr << "server log (end):\n" << log_tail(**server) << "\n";
}

}  // namespace
}  // namespace loraserve::testing
