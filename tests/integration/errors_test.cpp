// Every bad input gets its status from a real server: Admin without the token, paths outside
// the adapter root, unknown tasks, invalid parameters, a full queue, Admin without an adapter
// root, an open admin address without a token; the environment variables that stand for flags
// (and flags winning over them); and cancelling a stream frees its KV blocks.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

constexpr char kToken[] = "s3cret";

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Runs `loraserve serve ARGS` expecting it to refuse to start with exit code 2; returns what it
// printed and logged (its log in dir/LOG_NAME).
std::string refused_serve(const TempDir& dir, const std::string& log_name,
                          const std::vector<std::string>& args) {
  std::vector<std::string> argv = {loraserve_binary(), "serve"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  EXPECT_EQ(run_command(argv, &out, dir.path() / log_name), 2);
  return out + read_file(dir.path() / log_name);
}

v1::GenerateRequest ids_request(std::vector<int32_t> ids, int32_t max_tokens) {
  v1::GenerateRequest r;
  r.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  r.mutable_params()->set_max_tokens(max_tokens);
  r.mutable_params()->set_temperature(0.0f);
  return r;
}

class ErrorsTest : public ServerSuite<ErrorsTest> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    root_ = dir_->path() / "adapters";
    make_adapter_root(root_, 2);
    fs::create_directories(dir_->path() / "outside");
    copy_adapter(fs::path(kFixtureModel) / "adapters" / "all7_r8", dir_->path() / "outside" / "x",
                 1.0);
    fs::create_directory_symlink(dir_->path() / "outside" / "x", root_ / "sneaky");
    fs::create_directories(root_ / "broken");  // no adapter files
    start_suite_server({"--model", kFixtureModel, "--adapter-root", root_.string(), "--admin-token",
                        kToken, "--preload", "t0=" + (root_ / "t0").string()},
                       kToken);
  }

  static fs::path root_;
};

fs::path ErrorsTest::root_;

TEST_F(ErrorsTest, AdminWithoutTheTokenIsUnauthenticated) {
  client::Client none(client_options(*server_, ""));
  for (const Status& st :
       {none.list_adapters().status(), none.stats().status(), none.server_info().status(),
        none.load_adapter("x", "t1", false).status(), none.unload_adapter("t0").status()}) {
    EXPECT_EQ(st.code(), StatusCode::kUnauthenticated) << st.to_string();
    EXPECT_NE(st.message().find("authorization"), std::string::npos) << st.message();
  }
  client::Client wrong(client_options(*server_, "s3cre7"));
  EXPECT_EQ(wrong.list_adapters().status().code(), StatusCode::kUnauthenticated);
  // Nothing changed: t0 is still served.
  auto list = client_->list_adapters();
  ASSERT_TRUE(list.ok()) << list.status().to_string();
  ASSERT_EQ(list->adapters_size(), 1);
  EXPECT_EQ(list->adapters(0).task_id(), "t0");
}

TEST_F(ErrorsTest, PathsOutsideTheRootArePermissionDenied) {
  for (const std::string& path :
       {std::string("../outside/x"), (dir_->path() / "outside" / "x").string(),
        std::string("sneaky"), std::string("t1/../../outside/x")}) {
    auto r = client_->load_adapter("new_task", path, false);
    ASSERT_FALSE(r.ok()) << path;
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied) << r.status().to_string();
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
  }
  // An absolute path inside the root is fine.
  auto inside = client_->load_adapter("abs_task", (root_ / "t1").string(), false);
  ASSERT_TRUE(inside.ok()) << inside.status().to_string();
  EXPECT_EQ(inside->path(), "t1");
  ASSERT_TRUE(client_->unload_adapter("abs_task").ok());
}

TEST_F(ErrorsTest, AdminErrorsNameTheTaskOrFileAndChangeNothing) {
  auto missing = client_->load_adapter("new_task", "missing", false);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().to_string();
  auto broken = client_->load_adapter("new_task", "broken", false);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("adapter_config.json"), std::string::npos)
      << broken.status().to_string();
  auto exists = client_->load_adapter("t0", "t1", false);
  EXPECT_EQ(exists.status().code(), StatusCode::kAlreadyExists) << exists.status().to_string();
  auto bad_task = client_->load_adapter("bad task!", "t1", false);
  EXPECT_EQ(bad_task.status().code(), StatusCode::kInvalidArgument);
  auto unload = client_->unload_adapter("never_loaded");
  EXPECT_EQ(unload.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unload.status().message().find("never_loaded"), std::string::npos);
  auto list = client_->list_adapters();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->adapters_size(), 1);
  EXPECT_EQ(list->adapters(0).task_id(), "t0");
  EXPECT_EQ(list->adapters(0).path(), "t0");
}

TEST_F(ErrorsTest, UnknownTaskIsNotFound) {
  v1::GenerateRequest r = ids_request({5, 6}, 2);
  r.set_task_id("no_such_task");
  auto g = client_->generate(r);
  EXPECT_EQ(g.status().code(), StatusCode::kNotFound);
  EXPECT_NE(g.status().message().find("no_such_task"), std::string::npos);
  const Status st = client_->generate_stream(r, [](const auto&) { return true; });
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
}

TEST_F(ErrorsTest, InvalidParametersAreInvalidArgumentNamingTheField) {
  struct Bad {
    std::string what;
    std::function<void(v1::GenerateRequest*)> edit;
    std::string field;  // a word the message must contain
  };
  const std::vector<Bad> cases = {
      {"negative temperature", [](auto* r) { r->mutable_params()->set_temperature(-0.5f); },
       "temperature"},
      {"top_p 0", [](auto* r) { r->mutable_params()->set_top_p(0.0f); }, "top_p"},
      {"top_p above 1", [](auto* r) { r->mutable_params()->set_top_p(1.5f); }, "top_p"},
      {"max_tokens 0", [](auto* r) { r->mutable_params()->set_max_tokens(0); }, "max_tokens"},
      {"max_tokens past the context", [](auto* r) { r->mutable_params()->set_max_tokens(127); },
       "context"},
      {"negative top_k", [](auto* r) { r->mutable_params()->set_top_k(-1); }, "top_k"},
      {"logprobs 21", [](auto* r) { r->mutable_params()->set_logprobs(21); }, "logprobs"},
      {"empty token_ids", [](auto* r) { r->mutable_token_ids()->clear_ids(); }, "prompt"},
      {"no prompt", [](auto* r) { r->clear_prompt(); }, "prompt"},
      {"token id past the vocabulary", [](auto* r) { r->mutable_token_ids()->add_ids(256); },
       "vocabulary"},
      {"negative token id", [](auto* r) { r->mutable_token_ids()->add_ids(-1); }, "vocabulary"},
      {"malformed UTF-8", [](auto* r) { r->set_text(std::string("bad \xff\xfe", 6)); },
       "field 'text' is not valid UTF-8"},
      {"malformed UTF-8 stop",
       [](auto* r) { r->mutable_params()->add_stop(std::string("\xc0", 1)); },
       "field 'params.stop[0]' is not valid UTF-8"},
  };
  for (const Bad& b : cases) {
    SCOPED_TRACE(b.what);
    v1::GenerateRequest r = ids_request({5, 6, 7}, 4);
    b.edit(&r);
    auto g = client_->generate(r);
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument) << g.status().to_string();
    EXPECT_NE(g.status().message().find(b.field), std::string::npos) << g.status().message();
    const Status st = client_->generate_stream(r, [](const auto&) { return true; });
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  }
  // Unset fields are not validated: only max_tokens and the prompt here.
  v1::GenerateRequest minimal;
  minimal.mutable_token_ids()->add_ids(5);
  minimal.mutable_params()->set_max_tokens(2);
  EXPECT_TRUE(client_->generate(minimal).ok());
}

TEST_F(ErrorsTest, TextWithoutATokenizerIsFailedPrecondition) {
  v1::GenerateRequest r;
  r.set_text("hello");
  auto g = client_->generate(r);
  EXPECT_EQ(g.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(g.status().message().find("tokenizer"), std::string::npos);
  EXPECT_EQ(client_->tokenize("hello", true).status().code(), StatusCode::kFailedPrecondition);
}

// The engine may finish a short request before the cancellation lands; a long one with EOS
// ignored is cut short, which the per-task totals show, and its KV blocks come back.
TEST_F(ErrorsTest, CancellingAStreamFreesItsKvBlocks) {
  constexpr int kMaxTokens = 120;
  bool cut_short = false;
  // The fixture model writes 120 tokens in milliseconds: on a loaded machine (CI runs tests two
  // at a time beside image builds) the cancel can land after the end several times in a row.
  for (int attempt = 0; attempt < 20 && !cut_short; ++attempt) {
    const std::string task = attempt == 0 ? "t0" : "";
    // A snapshot with nothing running: one taken while an earlier request's end was delivered
    // but not yet published would count that request against this one.
    Result<v1::GetStatsResponse> before = client_->stats();
    for (int i = 0; i < 1000 && before.ok(); ++i) {
      if (before->requests_running() == 0 && before->requests_queued() == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      before = client_->stats();
    }
    ASSERT_TRUE(before.ok()) << before.status().to_string();
    v1::GenerateRequest r = ids_request({5, 6, 7, 8}, kMaxTokens);
    r.set_task_id(task);
    r.mutable_params()->set_ignore_eos(true);
    int messages = 0;
    const Status st = client_->generate_stream(r, [&](const auto&) { return ++messages < 1; });
    EXPECT_EQ(st.code(), StatusCode::kCancelled) << st.to_string();
    // Wait for the engine to end the sequence. The request is counted as finished with its final
    // update, on the engine thread; the KV and running gauges are published at the end of that
    // step, so a reading may see the one before the others.
    v1::GetStatsResponse after;
    for (int i = 0; i < 1000; ++i) {
      auto s = client_->stats();
      ASSERT_TRUE(s.ok());
      after = *s;
      if (after.requests_finished() > before->requests_finished() && after.kv_blocks_used() == 0 &&
          after.requests_running() == 0)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(after.requests_finished(), before->requests_finished() + 1);
    EXPECT_EQ(after.kv_blocks_used(), 0u);
    EXPECT_EQ(after.requests_running(), 0u);
    uint64_t generated = after.tokens_generated() - before->tokens_generated();
    cut_short = generated < static_cast<uint64_t>(kMaxTokens);
  }
  EXPECT_TRUE(cut_short) << "every cancelled stream ran to its end before the cancel landed";
  // The request's log line is written off the engine thread, after its final update.
  EXPECT_NE(server_->log_with("finish cancelled").find("finish cancelled"), std::string::npos);
}

TEST(ErrorsStandalone, FullQueueIsResourceExhausted) {
  TempDir dir;
  auto server = ServerProcess::start(
      {"--model", kFixtureModel, "--max-queue", "2", "--max-batch-size", "1"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::Client client(client_options(**server, ""));
  constexpr int kRequests = 32;
  std::vector<Status> results(kRequests);
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      while (!go.load()) std::this_thread::yield();
      v1::GenerateRequest r = ids_request({5, 6, 7, 8}, 100);
      r.mutable_params()->set_ignore_eos(true);
      results[static_cast<size_t>(i)] = client.generate(r).status();
    });
  }
  go.store(true);
  for (auto& t : threads) t.join();
  int ok = 0, exhausted = 0;
  for (const Status& st : results) {
    if (st.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.to_string();
      EXPECT_NE(st.message().find("max_queue"), std::string::npos) << st.message();
      ++exhausted;
    }
  }
  EXPECT_GE(ok, 2);
  EXPECT_GE(exhausted, 1);
}

TEST(ErrorsStandalone, AdminWithoutAnAdapterRootIsFailedPrecondition) {
  TempDir dir;
  auto server = ServerProcess::start({"--model", kFixtureModel}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::Client client(client_options(**server, ""));
  for (const Status& st : {client.list_adapters().status(), client.stats().status(),
                           client.load_adapter("x", "/tmp", false).status()}) {
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.to_string();
    EXPECT_NE(st.message().find("--adapter-root"), std::string::npos) << st.message();
  }
  EXPECT_TRUE(client.generate(ids_request({5, 6}, 2)).ok());
}

TEST(ErrorsStandalone, OpenAdminAddressWithoutATokenRefusesToStart) {
  TempDir dir;
  std::string out;
  const fs::path log = dir.path() / "serve.log";
  const int rc = run_command({loraserve_binary(), "serve", "--model", kFixtureModel, "--listen",
                              "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"},
                             &out, log);
  EXPECT_EQ(rc, 2);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("--admin-token"), std::string::npos) << text;
}

TEST(ErrorsStandalone, ConfigFileSetsFlagsAndFlagsWin) {
  TempDir dir;
  const fs::path config = dir.path() / "serve.json";
  std::ofstream(config) << R"({"max-batch-size": 5, "max-queue": 7, "default-max-tokens": 3,
                               "adapter-root": ")"
                        << (fs::path(kFixtureModel) / "adapters").string() << "\"}";
  auto server = ServerProcess::start(
      {"--config", config.string(), "--model", kFixtureModel, "--max-queue", "9"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::Client client(client_options(**server, ""));
  auto info = client.server_info();
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_EQ(info->limits().max_batch_size(), 5u);
  EXPECT_EQ(info->limits().max_queue(), 9u);
  EXPECT_EQ(info->limits().default_max_tokens(), 3u);

  std::ofstream(config) << R"({"no-such-flag": 1})";
  const std::string text =
      refused_serve(dir, "bad_config.log", {"--config", config.string(), "--model", kFixtureModel});
  EXPECT_NE(text.find("unknown flag 'no-such-flag'"), std::string::npos) << text;
}

// Flags that size threads or tables up front, or that a typo would turn into something else,
// are refused by name with exit code 2 before anything starts: past the bounds a process died of
// thread creation (--threads 100000: SIGSEGV in libgomp), of memory (--max-device-adapters
// 2^31-1: bad_alloc), or a drain overflowed (--drain-timeout 1e30 cancelled at once).
TEST(ErrorsStandalone, FlagsOutOfTheirRangeAreRefusedByName) {
  TempDir dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--threads", "100000"}, "--threads"},
      {{"--threads", "-1"}, "--threads"},
      {{"--http-threads", "2147483647"}, "--http-threads"},
      {{"--max-device-adapters", "2147483647"}, "--max-device-adapters"},
      {{"--metrics-max-tasks", "0"}, "--metrics-max-tasks"},
      {{"--kv-cache-memory", "nan"}, "--kv-cache-memory"},
      {{"--kv-cache-memory", "1e30"}, "--kv-cache-memory"},
      {{"--drain-timeout", "1e30"}, "--drain-timeout"},
      {{"--log-level", "INFO"}, "--log-level"},
      {{"--max-json-bytes", "18446744073709551616"}, "--max-json-bytes"},
      {{"--listen", "127.0.0.1:65537"}, "--listen"},
      {{"--admin-listen", "127.0.0.1"}, "--admin-listen"},
      {{"--http-admin-listen", "127.0.0.1"}, "--http-admin-listen"},
      // Reachable from other machines without --admin-token.
      {{"--http-admin-listen", "0.0.0.0:0"}, "--http-admin-listen"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& [flags, name] = cases[i];
    SCOPED_TRACE(flags[0] + " " + flags[1]);
    std::vector<std::string> args = {"--model", kFixtureModel, "--http-listen", ""};
    if (name != "--listen") args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    if (name != "--admin-listen") args.insert(args.end(), {"--admin-listen", "127.0.0.1:0"});
    args.insert(args.end(), flags.begin(), flags.end());
    const std::string text = refused_serve(dir, "flag" + std::to_string(i) + ".log", args);
    EXPECT_NE(text.find(name), std::string::npos) << text;
  }
}

// In --config, null leaves a flag unset (as config files mean it); a text flag refuses a bool:
// {"api-key": false} set the key "false".
TEST(ErrorsStandalone, ConfigFileNullIsUnsetAndTextFlagsTakeStrings) {
  TempDir dir;
  const fs::path config = dir.path() / "serve.json";
  std::ofstream(config) << R"({"max-queue": null, "admin-token": null, "adapter-root": ")"
                        << (fs::path(kFixtureModel) / "adapters").string() << "\"}";
  auto server =
      ServerProcess::start({"--config", config.string(), "--model", kFixtureModel}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::Client client(client_options(**server, ""));
  auto info = client.server_info();
  ASSERT_TRUE(info.ok()) << info.status().to_string();  // no admin token: none was set
  EXPECT_EQ(info->limits().max_queue(), 1024u);         // the default

  for (const char* text : {R"({"api-key": false})", R"({"admin-token": 5})"}) {
    SCOPED_TRACE(text);
    std::ofstream(config, std::ios::trunc) << text;
    const std::string logged = refused_serve(
        dir, "bad_config.log", {"--config", config.string(), "--model", kFixtureModel});
    EXPECT_NE(logged.find("takes a string"), std::string::npos) << logged;
  }
}

TEST(ErrorsStandalone, GenerateAnswersABadLineWithAnErrorNamingTheField) {
  TempDir dir;
  const fs::path input = dir.path() / "in.jsonl";
  std::ofstream(input) << "{\"prompt_token_ids\": [5, 6], \"stop_token_ids\": [4294967296]}\n"
                       << "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"temperature\": 0}\n"
                       << "not json\n"
                       << "{\"prompt_token_ids\": [5], \"prompt\": \"x\"}\n";
  std::string out;
  ASSERT_EQ(run_command({loraserve_binary(), "generate", "--model", kFixtureModel, "--input",
                         input.string()},
                        &out, dir.path() / "generate.log"),
            0)
      << out;
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 4u) << out;
  // An id past int32 is refused, not wrapped to a real token.
  EXPECT_EQ(lines[0]["error"]["message"],
            "field 'stop_token_ids' holds 4294967296, not a token id");
  EXPECT_EQ(lines[1]["token_ids"].size(), 2u) << lines[1];
  EXPECT_NE(lines[2]["error"]["message"].get<std::string>().find("line: not valid JSON"),
            std::string::npos);
  EXPECT_EQ(lines[3]["error"]["message"],
            "give exactly one of 'prompt' (text) and 'prompt_token_ids'");
}

TEST(ErrorsStandalone, MalformedPreloadRefusesToStart) {
  TempDir dir;
  std::string out;
  const fs::path log = dir.path() / "serve.log";
  EXPECT_EQ(run_command({loraserve_binary(), "serve", "--model", kFixtureModel, "--listen",
                         "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--preload", "nope"},
                        &out, log),
            2);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("--preload 'nope' must be TASK=DIR"), std::string::npos) << text;
}

TEST(ErrorsStandalone, AdminTokenFromTheEnvironment) {
  // The Docker images pass the token only through LORASERVE_ADMIN_TOKEN.
  TempDir dir;
  ::setenv("LORASERVE_ADMIN_TOKEN", "from-env", 1);
  auto server = ServerProcess::start(
      {"--model", kFixtureModel, "--adapter-root", (fs::path(kFixtureModel) / "adapters").string()},
      dir.path());
  ::unsetenv("LORASERVE_ADMIN_TOKEN");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  EXPECT_EQ(client::Client(client_options(**server, "")).list_adapters().status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_TRUE(client::Client(client_options(**server, "from-env")).list_adapters().ok());
}

// Sets environment variables for one scope (the child processes inherit them).
class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      ::setenv(name, value, 1);
      names_.emplace_back(name);
    }
  }
  ~ScopedEnv() {
    for (const std::string& name : names_) ::unsetenv(name.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::vector<std::string> names_;
};

TEST(ErrorsStandalone, ListenAddressesAndDeviceFromTheEnvironment) {
  // The images set their defaults through LORASERVE_LISTEN, LORASERVE_ADMIN_LISTEN and
  // LORASERVE_DEVICE: each must reach the flag it stands for.
  TempDir dir;
  std::string out;
  {
    ScopedEnv env{{"LORASERVE_LISTEN", "127.0.0.1:0"}, {"LORASERVE_ADMIN_LISTEN", "0.0.0.0:0"}};
    // Were the variables ignored, the server would start and serve: timeout ends it (124).
    EXPECT_EQ(run_command(
                  {"/usr/bin/timeout", "60", loraserve_binary(), "serve", "--model", kFixtureModel},
                  &out, dir.path() / "serve.log"),
              2);
  }
  const std::string serve_log = read_file(dir.path() / "serve.log");
  EXPECT_NE(serve_log.find("--admin-listen 0.0.0.0:0 is reachable from other machines"),
            std::string::npos)
      << serve_log;

  const fs::path input = dir.path() / "in.jsonl";
  std::ofstream(input) << "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2}\n";
  {
    ScopedEnv env{{"LORASERVE_DEVICE", "abacus"}};
    EXPECT_NE(run_command({loraserve_binary(), "generate", "--model", kFixtureModel, "--input",
                           input.string()},
                          &out, dir.path() / "generate.log"),
              0);
  }
  const std::string generate_log = read_file(dir.path() / "generate.log");
  EXPECT_NE(generate_log.find("--device 'abacus' is not one of"), std::string::npos)
      << generate_log;
}

TEST(ErrorsStandalone, FlagsWinOverTheEnvironment) {
  // `docker run IMAGE --device cpu` must replace the CUDA image's LORASERVE_DEVICE=cuda, and
  // --listen / --admin-listen the images' 0.0.0.0 addresses (ServerProcess passes 127.0.0.1:0).
  TempDir dir;
  ScopedEnv env{{"LORASERVE_LISTEN", "nowhere:1"},
                {"LORASERVE_ADMIN_LISTEN", "0.0.0.0:1"},
                {"LORASERVE_DEVICE", "abacus"}};
  auto server = ServerProcess::start({"--model", kFixtureModel, "--device", "cpu"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  EXPECT_TRUE((*server)->address().starts_with("127.0.0.1:")) << (*server)->address();
  EXPECT_TRUE((*server)->admin_address().starts_with("127.0.0.1:")) << (*server)->admin_address();
  auto reply = client::Client(client_options(**server, "")).generate(ids_request({5, 6}, 2));
  ASSERT_TRUE(reply.ok()) << reply.status().to_string();
}

TEST(ErrorsStandalone, MissingModelFailsWithTheFolderNamed) {
  TempDir dir;
  auto server = ServerProcess::start({"--model", "/nonexistent/model"}, dir.path(), 20);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("/nonexistent/model"), std::string::npos)
      << server.status().message();
}

}  // namespace
}  // namespace loraserve::testing
