// Admin during traffic: while 16 clients stream, one task is replaced back and forth between two
// adapter versions, another is unloaded and loaded again, and a third comes and goes unused.
// Every response must equal, token for token, the reference of one single version (requests in
// flight finish on the version they started with), and the only failures allowed are NOT_FOUND
// for the task that was unloaded at the time.
#include <gtest/gtest.h>

#include <atomic>
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
constexpr int kClients = 16;
constexpr auto kTrafficTime = std::chrono::seconds(4);

struct Sample {
  std::string task;
  size_t prompt = 0;
  Clock::time_point sent, received;
  Status status;
  std::vector<int32_t> tokens;
};

// Intervals during which the task "gone" was (possibly) not served.
struct Gap {
  Clock::time_point unload_started, load_done;
};

bool matches(const std::vector<int32_t>& tokens, const Reference& ref) {
  const size_t n = tokens_to_compare(ref, kEps);
  if (tokens.size() < n) return false;
  return std::equal(ref.token_ids.begin(), ref.token_ids.begin() + static_cast<long>(n),
                    tokens.begin());
}

TEST(AdminTraffic, LoadReplaceUnloadWhileSixteenClientsStream) {
  TempDir dir;
  const fs::path root = dir.path() / "adapters";
  const fs::path fixtures = fs::path(kFixtureModel) / "adapters";
  copy_adapter(fixtures / "all7_r8", root / "stable", 1.0);
  copy_adapter(fixtures / "all7_r8", root / "hot_a", 1.0);
  copy_adapter(fixtures / "all7_r8", root / "hot_b", 3.0);
  copy_adapter(fixtures / "attn_r16_rslora", root / "gone", 2.0);
  copy_adapter(fixtures / "mlp_r4_layer1", root / "extra", 1.0);

  const std::vector<std::vector<int32_t>> prompts = {
      {5, 17, 42, 99}, {100, 7, 8, 9, 10, 11}, {250, 3, 77}, {60, 61, 62, 63, 64, 65, 66}};
  constexpr int32_t kMaxTokens = 16;
  // References: "hot" under both versions, "gone" and "stable".
  const std::vector<std::string> ref_tasks = {"stable", "hot_a", "hot_b", "gone"};
  std::vector<nlohmann::json> lines;
  for (const auto& task : ref_tasks) {
    for (const auto& p : prompts)
      lines.push_back({{"prompt_token_ids", p},
                       {"max_tokens", kMaxTokens},
                       {"temperature", 0},
                       {"task", task}});
  }
  std::vector<std::string> adapters;
  for (const auto& task : ref_tasks) adapters.push_back(task + "=" + (root / task).string());
  auto refs = run_generate(kFixtureModel, adapters, lines, dir.path());
  ASSERT_TRUE(refs.ok()) << refs.status().to_string();
  auto ref = [&](const std::string& task, size_t prompt) -> const Reference& {
    const size_t t = static_cast<size_t>(std::find(ref_tasks.begin(), ref_tasks.end(), task) -
                                         ref_tasks.begin());
    return (*refs)[t * prompts.size() + prompt];
  };
  int differing = 0;
  for (size_t p = 0; p < prompts.size(); ++p)
    differing += ref("hot_a", p).token_ids != ref("hot_b", p).token_ids ? 1 : 0;
  ASSERT_GE(differing, 3) << "the two versions of 'hot' must generate differently";

  // Without on-demand loading: a request for 'gone' after its unload must be NOT_FOUND, not load
  // <root>/gone again.
  auto server = ServerProcess::start(
      {"--model", kFixtureModel, "--adapter-root", root.string(), "--no-load-on-demand",
       "--max-batch-size", "8", "--preload", "stable=" + (root / "stable").string(), "--preload",
       "hot=" + (root / "hot_a").string(), "--preload", "gone=" + (root / "gone").string()},
      dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::Client client(client_options(**server));

  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<Sample> samples;
  std::vector<Gap> gaps;
  std::vector<Status> admin_errors;
  int replaces = 0;

  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      const std::string tasks[] = {"stable", "hot", "gone", "hot"};
      for (size_t i = 0; !stop.load(); ++i) {
        Sample s;
        s.task = tasks[(static_cast<size_t>(c) + i) % 4];
        s.prompt = (static_cast<size_t>(c) * 3 + i) % prompts.size();
        v1::GenerateRequest r;
        r.set_task_id(s.task);
        r.mutable_token_ids()->mutable_ids()->Add(prompts[s.prompt].begin(),
                                                  prompts[s.prompt].end());
        r.mutable_params()->set_max_tokens(kMaxTokens);
        r.mutable_params()->set_temperature(0.0f);
        s.sent = Clock::now();
        s.status = client.generate_stream(r, [&](const v1::GenerateStreamResponse& m) {
          s.tokens.insert(s.tokens.end(), m.token_ids().begin(), m.token_ids().end());
          return true;
        });
        s.received = Clock::now();
        std::lock_guard<std::mutex> lock(mu);
        samples.push_back(std::move(s));
      }
    });
  }
  std::thread admin([&] {
    auto check = [&](const Status& st) {
      if (st.ok()) return;
      std::lock_guard<std::mutex> lock(mu);
      admin_errors.push_back(st);
    };
    for (int i = 0; !stop.load(); ++i) {
      check(client.load_adapter("hot", i % 2 == 0 ? "hot_b" : "hot_a", true).status());
      ++replaces;
      if (i % 4 == 1) {
        Gap g;
        g.unload_started = Clock::now();
        check(client.unload_adapter("gone").status());
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        check(client.load_adapter("gone", "gone", false).status());
        g.load_done = Clock::now();
        std::lock_guard<std::mutex> lock(mu);
        gaps.push_back(g);
      }
      if (i % 4 == 3) {
        check(client.load_adapter("extra", "extra", false).status());
        check(client.unload_adapter("extra").status());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::this_thread::sleep_for(kTrafficTime);
  stop.store(true);
  for (auto& t : clients) t.join();
  admin.join();

  for (const Status& st : admin_errors) ADD_FAILURE() << "admin call failed: " << st.to_string();
  ASSERT_GE(replaces, 20);
  ASSERT_GE(gaps.size(), 3u);
  int on_a = 0, on_b = 0, not_found = 0, ok = 0;
  for (const Sample& s : samples) {
    SCOPED_TRACE("task " + s.task + " prompt " + std::to_string(s.prompt));
    if (!s.status.ok()) {
      ASSERT_EQ(s.status.code(), StatusCode::kNotFound) << s.status.to_string();
      ASSERT_EQ(s.task, "gone");
      const bool during_gap = std::any_of(gaps.begin(), gaps.end(), [&](const Gap& g) {
        return g.unload_started <= s.received && s.sent <= g.load_done;
      });
      EXPECT_TRUE(during_gap) << "NOT_FOUND while 'gone' was served";
      ++not_found;
      continue;
    }
    ++ok;
    if (s.task == "hot") {
      const bool a = matches(s.tokens, ref("hot_a", s.prompt));
      const bool b = matches(s.tokens, ref("hot_b", s.prompt));
      EXPECT_TRUE(a || b) << "a response mixing two versions of 'hot'";
      on_a += a && !b ? 1 : 0;
      on_b += b && !a ? 1 : 0;
    } else {
      EXPECT_TRUE(matches(s.tokens, ref(s.task, s.prompt)));
    }
  }
  EXPECT_GE(ok, 100);
  EXPECT_GE(on_a, 5);
  EXPECT_GE(on_b, 5);
  std::cout << samples.size() << " requests: " << ok << " ok (" << on_a << " on hot_a, " << on_b
            << " on hot_b), " << not_found << " NOT_FOUND for 'gone' while unloaded; " << replaces
            << " replaces, " << gaps.size() << " unload/reload of 'gone'\n";
}

}  // namespace
}  // namespace loraserve::testing
