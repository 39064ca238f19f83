// The bad-request corpus: malformed requests sent to a real server through gRPC (typed and as
// raw bytes) and through the command line's JSON lines (`loraserve generate` and `tokenize`).
// Each case asserts the exact status code, that the message names the field (or flag) and stays
// short whatever the size of the input, and that the server still serves afterwards: health
// SERVING, the same adapters under the same versions, and greedy answers equal to offline
// `loraserve generate`.
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "client/client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kToken[] = "s3cret";
constexpr float kEps = 1e-3f;
// Bytes an error message may take, whatever the input: room for the 200-byte excerpt a path
// gets (kPathExcerptBytes) and the words around it.
constexpr size_t kShortMessage = 512;
constexpr int32_t kAnswerTokens = 8;
const std::vector<int32_t> kPrompt = {72, 101, 108, 108, 111};
const std::vector<std::string> kTasks = {"", "t0", "t1"};  // "" is the base model

// The limits the corpus runs under, as flags of both `serve` and `generate` (the serve-only
// --max-request-bytes is added by the suite).
const std::vector<std::string> kLimitFlags = {
    "--max-prompt-tokens",    "100", "--max-stop-strings", "4", "--max-stop-bytes",     "32",
    "--max-stop-token-ids",   "8",   "--max-logprobs",     "5", "--max-task-id-length", "64",
    "--max-request-id-bytes", "64"};
constexpr int32_t kMaxRequestBytes = 256 * 1024;

// A case: what it sends, and what must come back.
struct Case {
  std::string name;
  std::function<Status()> send;
  StatusCode code;
  std::vector<std::string> names;  // the message must contain each
};

v1::GenerateRequest good_request() {
  v1::GenerateRequest r;
  r.mutable_token_ids()->mutable_ids()->Add(kPrompt.begin(), kPrompt.end());
  r.mutable_params()->set_max_tokens(4);
  r.mutable_params()->set_temperature(0.0f);
  return r;
}

// `bytes` sent as they are to `method` ("/package.Service/Method"), with the admin token when
// given; the call's status.
Status raw_call(const std::string& address, const std::string& method, const std::string& bytes,
                const std::string& token = "") {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!token.empty()) context.AddMetadata("authorization", std::string("Bearer ") + token);
  grpc::CompletionQueue cq;
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  auto call = stub.PrepareUnaryCall(&context, method, request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return client::from_grpc(status);
}

std::string serialized(const google::protobuf::Message& m) {
  std::string out;
  m.SerializeToString(&out);
  return out;
}

class BadRequestsTest : public ServerSuite<BadRequestsTest> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    model_ = make_model_with_tokenizer(dir_->path() / "model");
    root_ = dir_->path() / "adapters";
    make_adapter_root(root_, 2);
    copy_adapter(fs::path(kFixtureModel) / "adapters" / "all7_r8", dir_->path() / "outside", 1.0);
    // Offline answers of every task to the probe prompt.
    std::vector<nlohmann::json> lines;
    for (const std::string& task : kTasks) {
      nlohmann::json line = {{"prompt_token_ids", kPrompt},
                             {"max_tokens", kAnswerTokens},
                             {"temperature", 0},
                             {"ignore_eos", true}};
      if (!task.empty()) line["task"] = task;
      lines.push_back(line);
    }
    auto refs = run_generate(model_.string(),
                             {"t0=" + (root_ / "t0").string(), "t1=" + (root_ / "t1").string()},
                             lines, dir_->path());
    ASSERT_TRUE(refs.ok()) << refs.status().to_string();
    refs_ = *refs;
    std::vector<std::string> args = {"--model",
                                     model_.string(),
                                     "--adapter-root",
                                     root_.string(),
                                     "--admin-token",
                                     kToken,
                                     "--preload",
                                     "t0=" + (root_ / "t0").string(),
                                     "--preload",
                                     "t1=" + (root_ / "t1").string(),
                                     "--max-request-bytes",
                                     std::to_string(kMaxRequestBytes)};
    args.insert(args.end(), kLimitFlags.begin(), kLimitFlags.end());
    start_suite_server(args, kToken);
    auto list = client_->list_adapters();
    ASSERT_TRUE(list.ok()) << list.status().to_string();
    for (const auto& a : list->adapters()) versions_[a.task_id()] = a.version();
    ASSERT_EQ(versions_.size(), 2u);
  }

  // The server after a bad request: SERVING, the same adapters and versions, and a greedy answer
  // (of the task `n` picks) equal to offline generate.
  static void expect_still_serving(size_t n) {
    auto health = client_->health("", false);
    ASSERT_TRUE(health.ok()) << health.status().to_string();
    EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
    auto list = client_->list_adapters();
    ASSERT_TRUE(list.ok()) << list.status().to_string();
    std::map<std::string, uint64_t> versions;
    for (const auto& a : list->adapters()) versions[a.task_id()] = a.version();
    EXPECT_EQ(versions, versions_) << "the adapters changed";
    const size_t t = n % kTasks.size();
    v1::GenerateRequest r = good_request();
    r.set_task_id(kTasks[t]);
    r.mutable_params()->set_max_tokens(kAnswerTokens);
    r.mutable_params()->set_ignore_eos(true);
    auto g = client_->generate(r);
    ASSERT_TRUE(g.ok()) << g.status().to_string();
    const Reference& ref = refs_[t];
    const size_t k = tokens_to_compare(ref, kEps);
    ASSERT_EQ(g->token_ids_size(), kAnswerTokens);
    EXPECT_TRUE(std::equal(ref.token_ids.begin(), ref.token_ids.begin() + static_cast<long>(k),
                           g->token_ids().begin()))
        << "task '" << kTasks[t] << "' answers differently";
  }

  // Runs every case and checks it; returns how many ran.
  static size_t run_cases(const std::vector<Case>& cases) {
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      SCOPED_TRACE(c.name);
      const Status st = c.send();
      EXPECT_EQ(st.code(), c.code) << st.to_string();
      for (const std::string& name : c.names)
        EXPECT_NE(st.message().find(name), std::string::npos) << st.message();
      EXPECT_LE(st.message().size(), kShortMessage) << st.message().substr(0, 600);
      expect_still_serving(i);
    }
    return cases.size();
  }

  // Two cases, Generate and GenerateStream, for the good request changed by `edit`.
  static void add_generate_cases(std::vector<Case>* cases, const std::string& name,
                                 std::function<void(v1::GenerateRequest*)> edit, StatusCode code,
                                 std::vector<std::string> names) {
    v1::GenerateRequest r = good_request();
    edit(&r);
    cases->push_back(
        {"Generate: " + name, [r] { return client_->generate(r).status(); }, code, names});
    cases->push_back({"GenerateStream: " + name,
                      [r] {
                        int messages = 0;
                        Status st = client_->generate_stream(r, [&](const auto&) {
                          ++messages;
                          return true;
                        });
                        if (st.ok() || messages > 0)
                          return internal_error("streamed {} messages, then {}", messages,
                                                st.to_string());
                        return st;
                      },
                      code, names});
  }

  static inline fs::path model_;
  static inline fs::path root_;
  static inline std::vector<Reference> refs_;
  static inline std::map<std::string, uint64_t> versions_;
};

TEST_F(BadRequestsTest, InferenceRequests) {
  using SC = StatusCode;
  const SC kInvalid = SC::kInvalidArgument;
  std::vector<Case> cases;
  auto gen = [&](const std::string& name, std::function<void(v1::GenerateRequest*)> edit, SC code,
                 std::vector<std::string> names) {
    add_generate_cases(&cases, name, std::move(edit), code, std::move(names));
  };
  auto ids = [](std::vector<int32_t> l) {
    return [l](v1::GenerateRequest* r) {
      r->mutable_token_ids()->clear_ids();
      for (int32_t id : l) r->mutable_token_ids()->add_ids(id);
    };
  };
  const std::string huge(100'000, 'x');
  // The prompt.
  gen("no prompt", [](auto* r) { r->clear_prompt(); }, kInvalid, {"prompt"});
  gen("empty text", [](auto* r) { r->set_text(""); }, kInvalid, {"prompt", "empty"});
  gen("empty token_ids", ids({}), kInvalid, {"prompt", "empty"});
  gen("token id past the vocabulary", ids({5, 256}), kInvalid, {"vocabulary"});
  gen("negative token id", ids({-1, 5}), kInvalid, {"vocabulary"});
  gen("token id INT32_MIN", ids({5, INT32_MIN}), kInvalid, {"vocabulary"});
  gen("malformed UTF-8 text", [](auto* r) { r->set_text(std::string("ab\xff", 3)); }, kInvalid,
      {"text", "UTF-8"});
  gen("UTF-16 surrogate in text", [](auto* r) { r->set_text(std::string("\xed\xa0\x80", 3)); },
      kInvalid, {"text", "UTF-8"});
  gen("overlong UTF-8 in text", [](auto* r) { r->set_text(std::string("\xc0\xaf", 2)); }, kInvalid,
      {"text", "UTF-8"});
  gen("101 prompt ids",
      [](auto* r) {
        for (int i = 0; i < 96; ++i) r->mutable_token_ids()->add_ids(7);
      },
      kInvalid, {"prompt", "--max-prompt-tokens"});
  gen("200-character text", [](auto* r) { r->set_text(std::string(200, 'a')); }, kInvalid,
      {"prompt", "--max-prompt-tokens"});
  // Sampling parameters.
  gen("max_tokens 0", [](auto* r) { r->mutable_params()->set_max_tokens(0); }, kInvalid,
      {"max_tokens"});
  gen("negative max_tokens", [](auto* r) { r->mutable_params()->set_max_tokens(-5); }, kInvalid,
      {"max_tokens"});
  gen("max_tokens past the context", [](auto* r) { r->mutable_params()->set_max_tokens(124); },
      kInvalid, {"max_tokens", "context"});
  gen("max_tokens INT32_MAX", [](auto* r) { r->mutable_params()->set_max_tokens(INT32_MAX); },
      kInvalid, {"max_tokens"});
  gen("negative temperature", [](auto* r) { r->mutable_params()->set_temperature(-1.0f); },
      kInvalid, {"temperature"});
  gen("NaN temperature", [](auto* r) { r->mutable_params()->set_temperature(NAN); }, kInvalid,
      {"temperature"});
  gen("infinite temperature", [](auto* r) { r->mutable_params()->set_temperature(INFINITY); },
      kInvalid, {"temperature"});
  gen("top_p 0", [](auto* r) { r->mutable_params()->set_top_p(0.0f); }, kInvalid, {"top_p"});
  gen("top_p 1.5", [](auto* r) { r->mutable_params()->set_top_p(1.5f); }, kInvalid, {"top_p"});
  gen("NaN top_p", [](auto* r) { r->mutable_params()->set_top_p(NAN); }, kInvalid, {"top_p"});
  gen("negative top_k", [](auto* r) { r->mutable_params()->set_top_k(-1); }, kInvalid, {"top_k"});
  gen("negative logprobs", [](auto* r) { r->mutable_params()->set_logprobs(-1); }, kInvalid,
      {"logprobs"});
  gen("logprobs past --max-logprobs", [](auto* r) { r->mutable_params()->set_logprobs(6); },
      kInvalid, {"logprobs", "--max-logprobs"});
  gen("logprobs INT32_MAX", [](auto* r) { r->mutable_params()->set_logprobs(INT32_MAX); }, kInvalid,
      {"logprobs"});
  gen("five stop strings",
      [](auto* r) {
        for (int i = 0; i < 5; ++i) r->mutable_params()->add_stop("s" + std::to_string(i));
      },
      kInvalid, {"stop", "--max-stop-strings"});
  gen("a 33-byte stop string", [](auto* r) { r->mutable_params()->add_stop(std::string(33, 's')); },
      kInvalid, {"stop[0]", "--max-stop-bytes"});
  gen("a 100 KB stop string", [&](auto* r) { r->mutable_params()->add_stop(huge); }, kInvalid,
      {"stop[0]", "--max-stop-bytes"});
  gen("an empty stop string", [](auto* r) { r->mutable_params()->add_stop(""); }, kInvalid,
      {"stop[0]"});
  gen("malformed UTF-8 stop string",
      [](auto* r) { r->mutable_params()->add_stop(std::string("\xc3\x28", 2)); }, kInvalid,
      {"params.stop[0]", "UTF-8"});
  gen("nine stop token ids",
      [](auto* r) {
        for (int i = 0; i < 9; ++i) r->mutable_params()->add_stop_token_ids(i);
      },
      kInvalid, {"stop_token_ids", "--max-stop-token-ids"});
  gen("stop token id past the vocabulary",
      [](auto* r) { r->mutable_params()->add_stop_token_ids(300); }, kInvalid, {"stop_token_ids"});
  gen("negative stop token id", [](auto* r) { r->mutable_params()->add_stop_token_ids(-2); },
      kInvalid, {"stop_token_ids"});
  // Task and request IDs.
  gen("65-character task_id", [](auto* r) { r->set_task_id(std::string(65, 't')); }, kInvalid,
      {"task_id", "--max-task-id-length"});
  gen("100 KB task_id", [&](auto* r) { r->set_task_id(huge); }, kInvalid,
      {"task_id", "--max-task-id-length"});
  gen("task_id with a space", [](auto* r) { r->set_task_id("bad task!"); }, kInvalid, {"task_id"});
  gen("task_id with a newline", [](auto* r) { r->set_task_id("t0\nforged log line"); }, kInvalid,
      {"task_id"});
  gen("malformed UTF-8 task_id", [](auto* r) { r->set_task_id(std::string("t\xff", 2)); }, kInvalid,
      {"task_id", "UTF-8"});
  gen("unknown task", [](auto* r) { r->set_task_id("no_such_task"); }, SC::kNotFound,
      {"no_such_task"});
  gen("65-byte request_id", [](auto* r) { r->set_request_id(std::string(65, 'r')); }, kInvalid,
      {"request_id", "--max-request-id-bytes"});
  gen("100 KB request_id", [&](auto* r) { r->set_request_id(huge); }, kInvalid,
      {"request_id", "--max-request-id-bytes"});
  gen("request_id with a newline", [](auto* r) { r->set_request_id("r1\nforged"); }, kInvalid,
      {"request_id", "control character"});
  gen("malformed UTF-8 request_id", [](auto* r) { r->set_request_id(std::string("\xfe", 1)); },
      kInvalid, {"request_id", "UTF-8"});
  gen("message over --max-request-bytes",
      [](auto* r) { r->set_text(std::string(kMaxRequestBytes + 1, 'a')); }, SC::kResourceExhausted,
      {"larger than max"});

  // Raw bytes.
  const std::string address = server_->address();
  auto raw = [&](const std::string& name, const std::string& method, std::string bytes, SC code,
                 std::vector<std::string> names) {
    cases.push_back({"raw " + method + ": " + name,
                     [address, method, bytes] { return raw_call(address, method, bytes); }, code,
                     names});
  };
  const std::string generate = "/loraserve.v1.Inference/Generate";
  const std::string tokenize = "/loraserve.v1.Inference/Tokenize";
  raw("not protobuf", generate, "\xff\xff\xff\xff", kInvalid, {"loraserve.v1.GenerateRequest"});
  raw("a string cut short", generate,
      std::string("\x1a\x05"
                  "ab",
                  4),
      kInvalid, {"loraserve.v1.GenerateRequest"});
  raw("a varint cut short", generate, std::string("\x28\xff", 2), kInvalid,
      {"loraserve.v1.GenerateRequest"});
  raw("groups nested 100000 deep", generate, std::string(100'000, '\x7b'), kInvalid,
      {"loraserve.v1.GenerateRequest"});
  raw("not protobuf", tokenize, "\xff\xff", kInvalid, {"loraserve.v1.TokenizeRequest"});
  {
    v1::TokenizeRequest t;
    t.set_text(std::string("\xe2\x82", 2));
    raw("malformed UTF-8 text", tokenize, serialized(t), kInvalid, {"text", "UTF-8"});
    t.set_text(std::string(kMaxRequestBytes + 1, 'a'));
    raw("message over --max-request-bytes", tokenize, serialized(t), SC::kResourceExhausted,
        {"larger than max"});
  }
  const size_t n = run_cases(cases);
  std::cout << n << " malformed inference requests\n";
  EXPECT_GE(n, 90u);
}

TEST_F(BadRequestsTest, AdminRequests) {
  using SC = StatusCode;
  const SC kInvalid = SC::kInvalidArgument;
  const std::string huge(100'000, 'x');
  std::vector<Case> cases;
  auto load = [&](const std::string& name, std::string task, std::string path, SC code,
                  std::vector<std::string> names) {
    cases.push_back({"LoadAdapter: " + name,
                     [task, path] { return client_->load_adapter(task, path, false).status(); },
                     code, names});
  };
  auto unload = [&](const std::string& name, std::string task, SC code,
                    std::vector<std::string> names) {
    cases.push_back({"UnloadAdapter: " + name,
                     [task] { return client_->unload_adapter(task).status(); }, code, names});
  };
  load("empty task_id", "", "t1", kInvalid, {"task_id"});
  load("65-character task_id", std::string(65, 't'), "t1", kInvalid,
       {"task_id", "--max-task-id-length"});
  load("100 KB task_id", huge, "t1", kInvalid, {"task_id", "--max-task-id-length"});
  load("task_id with a slash", "a/b", "t1", kInvalid, {"task_id"});
  load("malformed UTF-8 task_id", std::string("\xc3", 1), "t1", kInvalid, {"task_id", "UTF-8"});
  load("empty path", "new_task", "", kInvalid, {"path"});
  load("path over 4096 bytes", "new_task", huge, kInvalid, {"path", "4096"});
  std::string deep_path;
  for (int i = 0; i < 2000; ++i) deep_path += "p/";
  load("4000-byte path that does not exist", "new_task", deep_path, SC::kNotFound, {"path"});
  load("path outside the root", "new_task", "../outside", SC::kPermissionDenied, {"path"});
  load("absolute path outside the root", "new_task", "/etc", SC::kPermissionDenied, {"path"});
  load("path with a NUL", "new_task", std::string("t1\0x", 4), kInvalid, {"path", "NUL"});
  load("malformed UTF-8 path", "new_task", std::string("t1\xff", 3), kInvalid, {"path", "UTF-8"});
  load("folder that does not exist", "new_task", "missing", SC::kNotFound, {"path"});
  load("task already served", "t0", "t1", SC::kAlreadyExists, {"t0"});
  unload("empty task_id", "", kInvalid, {"task_id"});
  unload("100 KB task_id", huge, kInvalid, {"task_id", "--max-task-id-length"});
  unload("task_id with a space", "t 0", kInvalid, {"task_id"});
  unload("unknown task", "never_loaded", SC::kNotFound, {"never_loaded"});

  const std::string admin = server_->admin_address();
  auto raw = [&](const std::string& name, const std::string& method, std::string bytes,
                 std::string token, SC code, std::vector<std::string> names) {
    cases.push_back(
        {"raw " + method + ": " + name,
         [admin, method, bytes, token] { return raw_call(admin, method, bytes, token); }, code,
         names});
  };
  raw("not protobuf", "/loraserve.v1.Admin/LoadAdapter", "\xff\xff", kToken, kInvalid,
      {"loraserve.v1.LoadAdapterRequest"});
  raw("not protobuf", "/loraserve.v1.Admin/UnloadAdapter",
      "\x0a\x09"
      "ab",
      kToken, kInvalid, {"loraserve.v1.UnloadAdapterRequest"});
  raw("not protobuf", "/loraserve.v1.Admin/GetStats", "\xff", kToken, kInvalid,
      {"loraserve.v1.GetStatsRequest"});
  raw("not protobuf", "/loraserve.v1.Admin/ListAdapters", "\x07", kToken, kInvalid,
      {"loraserve.v1.ListAdaptersRequest"});
  raw("not protobuf", "/loraserve.v1.Admin/GetServerInfo", "\x0a", kToken, kInvalid,
      {"loraserve.v1.GetServerInfoRequest"});
  {
    v1::LoadAdapterRequest l;
    l.set_task_id("new_task");
    l.set_path("t1");
    raw("no token", "/loraserve.v1.Admin/LoadAdapter", serialized(l), "", SC::kUnauthenticated,
        {"authorization"});
    raw("wrong token", "/loraserve.v1.Admin/LoadAdapter", serialized(l), "s3cre7",
        SC::kUnauthenticated, {"token"});
    raw("no token, not protobuf", "/loraserve.v1.Admin/LoadAdapter", "\xff", "",
        SC::kUnauthenticated, {"authorization"});
    l.set_path(std::string(kMaxRequestBytes + 1, 'p'));
    raw("message over --max-request-bytes", "/loraserve.v1.Admin/LoadAdapter", serialized(l),
        kToken, SC::kResourceExhausted, {"larger than max"});
  }
  const size_t n = run_cases(cases);
  std::cout << n << " malformed admin requests\n";
  EXPECT_GE(n, 25u);
}

// GetServerInfo reports the limits the flags set.
TEST_F(BadRequestsTest, ServerInfoReportsTheLimits) {
  auto info = client_->server_info();
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  const v1::Limits& l = info->limits();
  EXPECT_EQ(l.max_request_bytes(), static_cast<uint32_t>(kMaxRequestBytes));
  EXPECT_EQ(l.max_concurrent_streams(), 1024u);
  EXPECT_EQ(l.max_prompt_tokens(), 100u);
  EXPECT_EQ(l.max_stop_strings(), 4u);
  EXPECT_EQ(l.max_stop_bytes(), 32u);
  EXPECT_EQ(l.max_stop_token_ids(), 8u);
  EXPECT_EQ(l.max_logprobs(), 5u);
  EXPECT_EQ(l.max_task_id_length(), 64u);
  EXPECT_EQ(l.max_request_id_bytes(), 64u);
}

// A request just inside every limit is served.
TEST_F(BadRequestsTest, RequestsAtTheLimitsAreServed) {
  v1::GenerateRequest r;
  for (int i = 0; i < 100; ++i) r.mutable_token_ids()->add_ids(7 + i);
  r.set_task_id("t0");
  r.set_request_id(std::string(64, 'r'));
  r.mutable_params()->set_max_tokens(4);
  r.mutable_params()->set_temperature(0.0f);
  r.mutable_params()->set_logprobs(5);
  for (int i = 0; i < 4; ++i) r.mutable_params()->add_stop(std::string(32, 'a' + i));
  for (int i = 0; i < 8; ++i) r.mutable_params()->add_stop_token_ids(200 + i);
  auto g = client_->generate(r);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(g->request_id(), std::string(64, 'r'));
  EXPECT_EQ(g->logprobs_size(), g->token_ids_size());
  EXPECT_EQ(g->logprobs(0).top_size(), 5);
}

// --max-concurrent-streams: calls past the limit are RESOURCE_EXHAUSTED naming the flag, the
// others are served, and a call after they all ended is served. (ServingState's own test checks
// the count exactly; here sixteen long calls start at once against a limit of two.)
TEST(BadRequestsStandalone, CallsPastMaxConcurrentStreamsAreResourceExhausted) {
  TempDir dir;
  auto server = ServerProcess::start(
      {"--model", kFixtureModel, "--max-concurrent-streams", "2", "--max-batch-size", "1"},
      dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::Client client(client_options(**server));
  // Sixteen calls race for two places; how many overlap depends on the machine's load (on a
  // busy machine they may even run one after another), so rounds repeat until one was refused.
  // Every call must end OK or RESOURCE_EXHAUSTED naming the flag, in every round.
  constexpr int kCalls = 16;
  constexpr int kMaxRounds = 20;
  int ok = 0, exhausted = 0;
  for (int round = 0; round < kMaxRounds && exhausted == 0; ++round) {
    std::vector<Status> results(kCalls);
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < kCalls; ++i) {
      threads.emplace_back([&, i] {
        while (!go.load()) std::this_thread::yield();
        v1::GenerateRequest r = good_request();
        r.mutable_params()->set_max_tokens(100);
        r.mutable_params()->set_ignore_eos(true);
        results[static_cast<size_t>(i)] =
            i % 2 == 0 ? client.generate(r).status()
                       : client.generate_stream(r, [](const auto&) { return true; });
      });
    }
    go.store(true);
    for (auto& t : threads) t.join();
    for (const Status& st : results) {
      if (st.ok()) {
        ++ok;
        continue;
      }
      EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.to_string();
      EXPECT_NE(st.message().find("--max-concurrent-streams"), std::string::npos) << st.message();
      ++exhausted;
    }
  }
  // A refusal means two calls were open, and those two succeed.
  EXPECT_GE(exhausted, 1) << "no call was refused in " << kMaxRounds << " rounds";
  EXPECT_GE(ok, 2);
  // The server closes a call a moment after its client has the answer: until the last of them
  // is closed, a new call may still find two open.
  auto after = client.generate(good_request());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!after.ok() && after.status().code() == StatusCode::kResourceExhausted &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    after = client.generate(good_request());
  }
  EXPECT_TRUE(after.ok()) << after.status().to_string();
}

// One input line of the command line's corpus and what its output line must say.
struct LineCase {
  std::string name;
  std::string line;
  std::string code;  // "" for a line that must be answered
  std::vector<std::string> names;
};

// Runs `loraserve <command> <args>` on the lines; its output lines, one per input line.
std::vector<nlohmann::json> run_lines(const std::vector<std::string>& command,
                                      const std::vector<LineCase>& cases, const fs::path& dir) {
  const fs::path input = dir / "corpus.jsonl";
  {
    std::ofstream in(input, std::ios::binary);
    for (const LineCase& c : cases) in << c.line << "\n";
  }
  std::vector<std::string> argv = {loraserve_binary()};
  argv.insert(argv.end(), command.begin(), command.end());
  argv.insert(argv.end(), {"--input", input.string()});
  std::string out;
  const fs::path log = dir / "corpus.log";
  const int rc = run_command(argv, &out, log);
  EXPECT_EQ(rc, 0) << out;
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    lines.push_back(nlohmann::json::parse(line, nullptr, false));
  return lines;
}

void check_lines(const std::vector<LineCase>& cases, const std::vector<nlohmann::json>& out,
                 const std::function<void(const LineCase&, const nlohmann::json&)>& check_good) {
  ASSERT_EQ(out.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const LineCase& c = cases[i];
    SCOPED_TRACE(c.name);
    const nlohmann::json& o = out[i];
    ASSERT_TRUE(o.is_object()) << o.dump();
    if (c.code.empty()) {
      ASSERT_FALSE(o.contains("error")) << o.dump();
      check_good(c, o);
      continue;
    }
    ASSERT_TRUE(o.contains("error")) << o.dump().substr(0, 600);
    EXPECT_EQ(o["error"]["code"], c.code) << o.dump().substr(0, 600);
    const std::string message = o["error"]["message"].get<std::string>();
    for (const std::string& name : c.names)
      EXPECT_NE(message.find(name), std::string::npos) << message.substr(0, 600);
    EXPECT_LE(message.size(), kShortMessage) << message.substr(0, 600);
  }
}

TEST(BadRequestsCommandLine, GenerateAnswersEveryBadLineAndServesTheGoodOnes) {
  TempDir dir;
  const fs::path model = make_model_with_tokenizer(dir.path() / "model");
  const fs::path root = dir.path() / "adapters";
  make_adapter_root(root, 1);
  const std::string good =
      R"({"prompt_token_ids": [72, 101, 108, 108, 111], "max_tokens": 8, "temperature": 0, )"
      R"("ignore_eos": true, "task": "t0"})";
  const std::string huge(100'000, 'x');
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  const std::string ok_ids = R"("prompt_token_ids": [5, 6])";
  auto with = [&](const std::string& fields) { return "{" + ok_ids + ", " + fields + "}"; };
  const std::string kInvalid = "INVALID_ARGUMENT";
  std::vector<LineCase> cases = {
      {"good line first", good, "", {}},
      {"not JSON", "not json", kInvalid, {"JSON"}},
      {"a list", "[1, 2]", kInvalid, {"object"}},
      {"an empty object", "{}", kInvalid, {"prompt"}},
      {"both prompts", R"({"prompt": "x", "prompt_token_ids": [5]})", kInvalid, {"prompt"}},
      {"empty prompt", R"({"prompt": ""})", kInvalid, {"prompt", "empty"}},
      {"prompt not a string", R"({"prompt": 5})", kInvalid, {"prompt"}},
      {"ids not a list", R"({"prompt_token_ids": "abc"})", kInvalid, {"prompt_token_ids"}},
      {"a float id", R"({"prompt_token_ids": [1.5]})", kInvalid, {"prompt_token_ids"}},
      {"an id past int32", R"({"prompt_token_ids": [4294967296]})", kInvalid, {"prompt_token_ids"}},
      {"no ids", R"({"prompt_token_ids": []})", kInvalid, {"prompt"}},
      {"an id past the vocabulary", R"({"prompt_token_ids": [5, 256]})", kInvalid, {"vocabulary"}},
      {"ids nested 100000 deep",
       "{\"prompt_token_ids\": " + deep + "}",
       kInvalid,
       {"--max-json-depth"}},
      {"a 100 KB string as an id",
       "{\"prompt_token_ids\": [\"" + huge + "\"]}",
       kInvalid,
       {"prompt_token_ids"}},
      {"101 prompt tokens",
       "{\"prompt\": \"" + std::string(101, 'a') + "\"}",
       kInvalid,
       {"prompt", "--max-prompt-tokens"}},
      {"max_tokens a string", with(R"("max_tokens": "5")"), kInvalid, {"max_tokens"}},
      {"max_tokens a 100 KB string",
       with("\"max_tokens\": \"" + huge + "\""),
       kInvalid,
       {"max_tokens"}},
      {"max_tokens 0", with(R"("max_tokens": 0)"), kInvalid, {"max_tokens"}},
      {"max_tokens 1e20", with(R"("max_tokens": 1e20)"), kInvalid, {"max_tokens"}},
      {"max_tokens past int64",
       with(R"("max_tokens": 99999999999999999999)"),
       kInvalid,
       {"max_tokens"}},
      {"temperature a string", with(R"("temperature": "hot")"), kInvalid, {"temperature"}},
      {"negative temperature", with(R"("temperature": -1)"), kInvalid, {"temperature"}},
      {"temperature 1e300", with(R"("temperature": 1e300)"), kInvalid, {"temperature"}},
      {"top_p 2", with(R"("top_p": 2)"), kInvalid, {"top_p"}},
      {"negative top_k", with(R"("top_k": -3)"), kInvalid, {"top_k"}},
      {"negative seed", with(R"("seed": -1)"), kInvalid, {"seed"}},
      {"logprobs past --max-logprobs",
       with(R"("logprobs": 6)"),
       kInvalid,
       {"logprobs", "--max-logprobs"}},
      {"stop not a list", with(R"("stop": "x")"), kInvalid, {"stop"}},
      {"stop holding a number", with(R"("stop": [1])"), kInvalid, {"stop"}},
      {"stop holding a list nested 50000 deep",
       with("\"stop\": [" + std::string(50'000, '[') + std::string(50'000, ']') + "]"),
       kInvalid,
       {"--max-json-depth"}},
      {"stop holding a list", with(R"("stop": [["a"]])"), kInvalid, {"stop"}},
      {"five stop strings",
       with(R"("stop": ["a", "b", "c", "d", "e"])"),
       kInvalid,
       {"stop", "--max-stop-strings"}},
      {"a 100 KB stop string",
       with("\"stop\": [\"" + huge + "\"]"),
       kInvalid,
       {"stop[0]", "--max-stop-bytes"}},
      {"nine stop ids",
       with(R"("stop_token_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9])"),
       kInvalid,
       {"stop_token_ids", "--max-stop-token-ids"}},
      {"a 100 KB task",
       with("\"task\": \"" + huge + "\""),
       kInvalid,
       {"task", "--max-task-id-length"}},
      {"a task with a space", with(R"("task": "bad task")"), kInvalid, {"task"}},
      {"a task that is a number", with(R"("task": 5)"), kInvalid, {"task"}},
      {"an unknown task", with(R"("task": "nope")"), "NOT_FOUND", {"nope"}},
      {"request_id with a newline",
       with(R"("request_id": "a\nb")"),
       kInvalid,
       {"request_id", "control character"}},
      {"a 100 KB request_id",
       with("\"request_id\": \"" + huge + "\""),
       kInvalid,
       {"request_id", "--max-request-id-bytes"}},
      {"ignore_eos a string", with(R"("ignore_eos": "yes")"), kInvalid, {"ignore_eos"}},
      {"skip_special_tokens a number",
       with(R"("skip_special_tokens": 1)"),
       kInvalid,
       {"skip_special_tokens"}},
      {"an unknown field", with(R"("foo": 1)"), kInvalid, {"foo"}},
      {"a 100 KB unknown field name", with("\"" + huge + "\": 1"), kInvalid, {"unknown field"}},
      {"ill-formed UTF-8 in a string",
       with("\"request_id\": \"a\xff\""),
       kInvalid,
       {"JSON", "UTF-8"}},
      {"a 100 KB string with a bad escape",
       "{\"prompt\": \"" + huge + "\\q\"}",
       kInvalid,
       {"JSON"}},
      {"good line last", good, "", {}},
  };
  std::vector<std::string> command = {
      "generate",    "--model", model.string(), "--adapter", "t0=" + (root / "t0").string(),
      "--log-level", "error"};
  command.insert(command.end(), kLimitFlags.begin(), kLimitFlags.end());
  const auto out = run_lines(command, cases, dir.path());
  auto refs = run_generate(model.string(), {"t0=" + (root / "t0").string()},
                           {nlohmann::json::parse(good)}, dir.path());
  ASSERT_TRUE(refs.ok()) << refs.status().to_string();
  check_lines(cases, out, [&](const LineCase&, const nlohmann::json& o) {
    const size_t k = tokens_to_compare((*refs)[0], kEps);
    const auto ids = o["token_ids"].get<std::vector<int32_t>>();
    ASSERT_EQ(ids.size(), static_cast<size_t>(kAnswerTokens));
    EXPECT_TRUE(std::equal((*refs)[0].token_ids.begin(),
                           (*refs)[0].token_ids.begin() + static_cast<long>(k), ids.begin()));
  });
  std::cout << cases.size() - 2 << " malformed generate lines\n";
}

TEST(BadRequestsCommandLine, TokenizeAnswersEveryBadLine) {
  TempDir dir;
  const fs::path model = make_model_with_tokenizer(dir.path() / "model");
  const std::string huge(100'000, 'x');
  const std::string kInvalid = "INVALID_ARGUMENT";
  const std::vector<LineCase> encode = {
      {"good line first", R"({"text": "hi"})", "", {}},
      {"not JSON", "{\"text\": ", kInvalid, {"JSON"}},
      {"a string", "\"hi\"", kInvalid, {"object"}},
      {"no text", "{}", kInvalid, {"text"}},
      {"text a number", R"({"text": 5})", kInvalid, {"text"}},
      {"text nested 50000 deep",
       "{\"text\": " + std::string(50'000, '[') + std::string(50'000, ']') + "}",
       kInvalid,
       {"--max-json-depth"}},
      {"text a list", R"({"text": ["hi"]})", kInvalid, {"text"}},
      {"add_special_tokens a string",
       R"({"text": "hi", "add_special_tokens": "yes"})",
       kInvalid,
       {"add_special_tokens"}},
      {"an unknown field", R"({"text": "hi", "ids": [1]})", kInvalid, {"ids"}},
      {"a 100 KB unknown field name",
       "{\"text\": \"hi\", \"" + huge + "\": 1}",
       kInvalid,
       {"unknown field"}},
      {"ill-formed UTF-8", "{\"text\": \"\xc3\"}", kInvalid, {"JSON", "UTF-8"}},
      {"good line last", R"({"text": "hi"})", "", {}},
  };
  const auto out = run_lines({"tokenize", "--model", model.string()}, encode, dir.path());
  check_lines(encode, out, [](const LineCase&, const nlohmann::json& o) {
    EXPECT_EQ(o["ids"], nlohmann::json::parse("[104, 105]"));
  });
  const std::vector<LineCase> decode = {
      {"good line first", R"({"ids": [104, 105]})", "", {}},
      {"ids not a list", R"({"ids": 5})", kInvalid, {"ids"}},
      {"no ids", "{}", kInvalid, {"ids"}},
      {"a float id", R"({"ids": [1.5]})", kInvalid, {"ids"}},
      {"an id past int32", R"({"ids": [4294967296]})", kInvalid, {"ids"}},
      // As Hugging Face's decode: an id with no token gives no text (a padded vocabulary).
      {"an id past the vocabulary", R"({"ids": [104, 300, 105]})", "", {}},
      {"a negative id", R"({"ids": [-1]})", kInvalid, {"-1"}},
      {"skip_special_tokens a string",
       R"({"ids": [104], "skip_special_tokens": "no"})",
       kInvalid,
       {"skip_special_tokens"}},
      {"good line last", R"({"ids": [104, 105]})", "", {}},
  };
  const auto decoded =
      run_lines({"tokenize", "--model", model.string(), "--decode"}, decode, dir.path());
  check_lines(decode, decoded,
              [](const LineCase&, const nlohmann::json& o) { EXPECT_EQ(o["text"], "hi"); });
  std::cout << encode.size() + decode.size() - 5 << " malformed tokenize lines\n";
}

}  // namespace
}  // namespace loraserve::testing
