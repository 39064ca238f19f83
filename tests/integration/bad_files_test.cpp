// The bad-file corpus (tests/bad_inputs/) through a real server. Every bad adapter, loaded with
// LoadAdapter from inside --adapter-root, gets its exact status code and a short message naming
// the file and field; meanwhile the server keeps serving, and the adapters it served before
// stay loaded, at the same versions, answering exactly as `loraserve generate` does. Every bad
// model folder, and every bad --config file, makes `loraserve serve` exit with a clear message
// (never a crash, never a hang: each run has a time limit).
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "client/client.h"
#include "tests/bad_inputs/bad_inputs.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

constexpr float kEps = 1e-3f;
constexpr int32_t kMaxTokens = 12;
// A bad model folder is refused within this; more means a hang.
constexpr double kExitTimeoutS = 60.0;

const std::vector<int32_t> kPrompt = {5, 17, 42, 99, 3};

v1::GenerateRequest request_for(const std::string& task) {
  v1::GenerateRequest r;
  r.set_task_id(task);
  r.mutable_token_ids()->mutable_ids()->Add(kPrompt.begin(), kPrompt.end());
  r.mutable_params()->set_max_tokens(kMaxTokens);
  r.mutable_params()->set_temperature(0.0f);
  return r;
}

class BadFilesServerTest : public ServerSuite<BadFilesServerTest> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    root_ = dir_->path() / "adapters";
    tasks_ = make_adapter_root(root_, 2);
    std::vector<std::string> args = {"--model", kFixtureModel, "--adapter-root", root_.string()};
    std::vector<std::string> adapters;
    for (const auto& t : tasks_) {
      args.push_back("--preload");
      args.push_back(t + "=" + (root_ / t).string());
      adapters.push_back(t + "=" + (root_ / t).string());
    }
    std::vector<nlohmann::json> lines;
    for (const auto& t : tasks_) {
      lines.push_back({{"prompt_token_ids", kPrompt},
                       {"max_tokens", kMaxTokens},
                       {"temperature", 0},
                       {"task", t}});
    }
    auto refs = run_generate(kFixtureModel, adapters, lines, dir_->path());
    ASSERT_TRUE(refs.ok()) << refs.status().to_string();
    refs_ = new std::vector<Reference>(std::move(refs).value());
    start_suite_server(args);
  }
  static void TearDownTestSuite() {
    delete refs_;
    refs_ = nullptr;
    ServerSuite::TearDownTestSuite();
  }

  // Every preloaded task still answers as the reference does.
  static void expect_served_adapters_answer() {
    for (size_t i = 0; i < tasks_.size(); ++i) {
      auto r = client_->generate(request_for(tasks_[i]));
      ASSERT_TRUE(r.ok()) << tasks_[i] << ": " << r.status().to_string();
      const Reference& ref = (*refs_)[i];
      const size_t n = tokens_to_compare(ref, kEps);
      ASSERT_GE(static_cast<size_t>(r->token_ids_size()), n);
      for (size_t k = 0; k < n; ++k)
        EXPECT_EQ(r->token_ids(static_cast<int>(k)), ref.token_ids[k])
            << tasks_[i] << " token " << k;
    }
  }

  static inline fs::path root_;
  static inline std::vector<std::string> tasks_;
  static inline std::vector<Reference>* refs_ = nullptr;
};

TEST_F(BadFilesServerTest, EveryBadAdapterGetsItsCodeAndTheServerKeepsServing) {
  auto before = client_->list_adapters();
  ASSERT_TRUE(before.ok()) << before.status().to_string();
  std::map<std::string, uint64_t> versions;
  for (const auto& a : before->adapters()) versions[a.task_id()] = a.version();
  ASSERT_EQ(versions.size(), tasks_.size());
  expect_served_adapters_answer();

  int n = 0;
  for (const BadFile& c : bad_files()) {
    if (c.target != BadTarget::kAdapter) continue;
    SCOPED_TRACE(c.name);
    const std::string folder = fmt::format("bad{}", n++);
    write_bad_adapter(c, root_ / folder, dir_->path() / "outside" / folder);
    auto r = client_->load_adapter("bad_task", folder, /*replace=*/false);
    ASSERT_FALSE(r.ok()) << "loaded";
    EXPECT_EQ(check_bad_file_error(c, r.status().code(), r.status().message()), "");
    if (n % 16 == 0) {
      auto health = client_->health("", false);
      ASSERT_TRUE(health.ok()) << health.status().to_string();
      EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
    }
  }
  std::cout << n << " bad adapters refused through LoadAdapter\n";
  auto after = client_->list_adapters();
  ASSERT_TRUE(after.ok()) << after.status().to_string();
  ASSERT_EQ(after->adapters_size(), static_cast<int>(versions.size()));
  for (const auto& a : after->adapters())
    EXPECT_EQ(a.version(), versions[a.task_id()]) << a.task_id();
  expect_served_adapters_answer();
}

// `loraserve serve` on a bad model folder or --config: its exit code and log within the limit.
struct Exit {
  int code = 0;
  std::string log;
};

Exit run_serve(const std::vector<std::string>& args, const fs::path& work,
               const std::string& name) {
  std::vector<std::string> argv = {
      loraserve_binary(), "serve",         "--listen",    "127.0.0.1:0", "--admin-listen",
      "127.0.0.1:0",      "--http-listen", "127.0.0.1:0", "--threads",   "1"};
  argv.insert(argv.end(), args.begin(), args.end());
  const fs::path log = work / (name + ".log");
  Exit e;
  e.code = run_command(argv, nullptr, log, kExitTimeoutS);
  std::ifstream in(log);
  e.log.assign(std::istreambuf_iterator<char>(in), {});
  return e;
}

TEST(BadModelFolders, ServeExitsWithAClearMessage) {
  TempDir dir;
  std::vector<const BadFile*> cases;
  const std::vector<BadFile> all = bad_files();
  for (const BadFile& c : all) {
    if (c.target != BadTarget::kModel) continue;
    write_bad_model(c, dir.path() / fmt::format("model{}", cases.size()), dir.path() / "outside");
    cases.push_back(&c);
  }
  // The servers run a few at a time (each spends most of its life starting and stopping).
  std::vector<Exit> exits(cases.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> runners;
  for (int t = 0; t < 4; ++t) {
    runners.emplace_back([&] {
      for (size_t i = next++; i < cases.size(); i = next++) {
        const fs::path model = dir.path() / fmt::format("model{}", i);
        exits[i] = run_serve({"--model", model.string()}, dir.path(), fmt::format("m{}", i));
      }
    });
  }
  for (auto& r : runners) r.join();
  for (size_t i = 0; i < cases.size(); ++i) {
    const BadFile& c = *cases[i];
    const Exit& e = exits[i];
    SCOPED_TRACE(c.name);
    ASSERT_NE(e.code, -1) << "still running after " << kExitTimeoutS << " s";
    EXPECT_EQ(e.code, 1) << e.log;
    // The one error line: "serve: <CODE>: <message>".
    const std::string prefix = fmt::format("serve: {}: ", status_code_name(c.code));
    const size_t at = e.log.find(prefix);
    ASSERT_NE(at, std::string::npos) << e.log;
    const size_t end = e.log.find('\n', at);
    const std::string message = e.log.substr(at + prefix.size(), end - at - prefix.size());
    EXPECT_EQ(check_bad_file_error(c, c.code, message), "");
  }
  std::cout << cases.size() << " bad model folders refused by loraserve serve\n";
}

TEST(BadServeConfigs, ServeExitsWithAClearMessage) {
  TempDir dir;
  int n = 0;
  for (const BadFile& c : bad_files()) {
    if (c.target != BadTarget::kServeConfig) continue;
    SCOPED_TRACE(c.name);
    const fs::path config = dir.path() / fmt::format("config{}.json", n++);
    c.make(config, dir.path());
    const Exit e = run_serve({"--model", kFixtureModel, "--config", config.string()}, dir.path(),
                             fmt::format("c{}", n));
    ASSERT_NE(e.code, -1) << "still running after " << kExitTimeoutS << " s";
    EXPECT_EQ(e.code, 2) << e.log;
    const size_t at = e.log.find("serve: --config");
    ASSERT_NE(at, std::string::npos) << e.log;
    const std::string message = e.log.substr(at + 7, e.log.find('\n', at) - at - 7);
    EXPECT_EQ(check_bad_file_error(c, c.code, message), "");
  }
  std::cout << n << " bad --config files refused by loraserve serve\n";
}

}  // namespace
}  // namespace loraserve::testing
