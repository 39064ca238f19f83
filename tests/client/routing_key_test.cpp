// The routing key: the C++ client, the load generator and loractl send the task ID as
// `x-loraserve-task` metadata on every call that names a task, and only then. A fake server
// (the generated services, recording what each call's metadata holds) stands in for loraserve,
// so what is checked is what a load balancer in between would see.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/client.h"
#include "client/http_load_generator.h"
#include "client/load_generator.h"
#include "tests/client/fake_server.h"

namespace loraserve::client {
namespace {

using fake::FakeServer;
using fake::SeenCall;

class RoutingKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.started());
    address_ = server_.address();
  }

  ClientOptions options() const {
    ClientOptions o;
    o.address = address_;
    o.admin_address = address_;
    o.admin_token = "secret";
    o.timeout_s = 30;
    return o;
  }

  // Runs loractl against the fake server; its exit status.
  int loractl(const std::string& args) const {
    const std::string command = std::string(LORACTL_PATH) + " --server " + address_ +
                                " --admin-server " + address_ + " --token secret --timeout 30 " +
                                args + " >/dev/null 2>&1";
    const int rc = std::system(command.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }

  FakeServer server_;
  fake::Recorder& recorder_ = server_.recorder();
  std::string address_;
};

v1::GenerateRequest request_for(const std::string& task) {
  v1::GenerateRequest r;
  r.set_task_id(task);
  r.mutable_token_ids()->add_ids(5);
  return r;
}

// Every call that names a task carries its ID once as the routing key; the others carry none.
void expect_keys_match_tasks(const std::vector<SeenCall>& calls) {
  for (const SeenCall& c : calls) {
    SCOPED_TRACE(c.method + " task '" + c.task_id + "'");
    if (c.task_id.empty()) {
      EXPECT_TRUE(c.routing_keys.empty());
    } else {
      EXPECT_EQ(c.routing_keys, std::vector<std::string>{c.task_id});
    }
  }
}

TEST_F(RoutingKeyTest, ClientSendsTheTaskOnGenerationCalls) {
  Client client(options());
  ASSERT_TRUE(client.generate(request_for("sql-expert_v2:1")).ok());
  ASSERT_TRUE(
      client.generate_stream(request_for("chat.fr"), [](const auto&) { return true; }).ok());
  ASSERT_TRUE(client.generate(request_for("")).ok());
  ASSERT_TRUE(client.tokenize("hello", true).ok());

  const std::vector<SeenCall> calls = recorder_.take();
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_EQ(calls[0].method, "Generate");
  EXPECT_EQ(calls[0].routing_keys, std::vector<std::string>{"sql-expert_v2:1"});
  EXPECT_EQ(calls[1].method, "GenerateStream");
  EXPECT_EQ(calls[1].routing_keys, std::vector<std::string>{"chat.fr"});
  EXPECT_EQ(calls[2].method, "Generate");  // the base model: no key, any replica serves it
  EXPECT_TRUE(calls[2].routing_keys.empty());
  EXPECT_EQ(calls[3].method, "Tokenize");
  EXPECT_TRUE(calls[3].routing_keys.empty());
  // The admin token goes to Admin only.
  for (const SeenCall& c : calls) EXPECT_TRUE(c.authorizations.empty()) << c.method;
}

TEST_F(RoutingKeyTest, ClientSendsTheTaskOnAdminCallsThatNameOne) {
  Client client(options());
  ASSERT_TRUE(client.load_adapter("sql", "sql-v3", /*replace=*/true).ok());
  ASSERT_TRUE(client.unload_adapter("sql").ok());
  ASSERT_TRUE(client.list_adapters().ok());

  const std::vector<SeenCall> calls = recorder_.take();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].routing_keys, std::vector<std::string>{"sql"});
  EXPECT_EQ(calls[1].routing_keys, std::vector<std::string>{"sql"});
  EXPECT_TRUE(calls[2].routing_keys.empty());
  for (const SeenCall& c : calls)
    EXPECT_EQ(c.authorizations, std::vector<std::string>{"Bearer secret"}) << c.method;
}

// A task ID that cannot be a metadata value still reaches the server (which then names task_id in
// its error), without a key: the transport must not fail the call in its place.
TEST_F(RoutingKeyTest, TaskIdsThatCannotBeMetadataAreSentWithoutKey) {
  Client client(options());
  const std::vector<std::string> odd = {"line\nbreak", "caf\xc3\xa9", "tab\there", "del\x7f",
                                        std::string(kMaxTaskMetadataBytes + 1, 'a')};
  for (const std::string& task : odd) {
    EXPECT_TRUE(client.generate(request_for(task)).ok());
    EXPECT_TRUE(client.load_adapter(task, "dir", false).ok());
  }
  // The longest accepted still goes as a key.
  const std::string longest(kMaxTaskMetadataBytes, 'b');
  ASSERT_TRUE(client.generate(request_for(longest)).ok());

  const std::vector<SeenCall> calls = recorder_.take();
  ASSERT_EQ(calls.size(), 2 * odd.size() + 1);
  for (size_t i = 0; i < 2 * odd.size(); ++i) {
    EXPECT_EQ(calls[i].task_id, odd[i / 2]) << "the message keeps the ID as given";
    EXPECT_TRUE(calls[i].routing_keys.empty()) << i;
  }
  EXPECT_EQ(calls.back().routing_keys, std::vector<std::string>{longest});
}

TEST_F(RoutingKeyTest, LoadGeneratorSendsEachRequestsTask) {
  Client client(options());
  std::vector<TraceRequest> trace;
  for (const char* task : {"t0", "t1", "", "t0", "t2"}) {
    TraceRequest r;
    r.task_id = task;
    r.prompt = {5, 6};
    r.max_tokens = 1;
    trace.push_back(r);
  }
  const LoadResult result = run_load(client, trace, [](const LoadProgress&) {});
  EXPECT_EQ(result.succeeded, 5);

  const std::vector<SeenCall> calls = recorder_.take();
  ASSERT_EQ(calls.size(), trace.size());
  std::map<std::string, int> per_task;
  for (const SeenCall& c : calls) ++per_task[c.task_id];
  EXPECT_EQ(per_task, (std::map<std::string, int>{{"", 1}, {"t0", 2}, {"t1", 1}, {"t2", 1}}));
  expect_keys_match_tasks(calls);
}

TEST_F(RoutingKeyTest, LoractlSendsTheTask) {
  ASSERT_EQ(loractl("generate --task a --task b --task '' --ids 5,6"), 0);
  ASSERT_EQ(loractl("stream --task c --ids 5"), 0);
  ASSERT_EQ(loractl("load d dir --replace"), 0);
  ASSERT_EQ(loractl("unload d"), 0);
  ASSERT_EQ(loractl("bench --requests 4 --tasks e,f --vocab-size 10 --no-progress"), 0);

  const std::vector<SeenCall> calls = recorder_.take();
  std::map<std::string, int> per_task;
  for (const SeenCall& c : calls) ++per_task[c.method + " " + c.task_id];
  EXPECT_EQ(per_task["Generate a"], 1);
  EXPECT_EQ(per_task["Generate b"], 1);
  EXPECT_EQ(per_task["Generate "], 1);
  EXPECT_EQ(per_task["GenerateStream c"], 1);
  EXPECT_EQ(per_task["LoadAdapter d"], 1);
  EXPECT_EQ(per_task["UnloadAdapter d"], 1);
  EXPECT_EQ(per_task["GenerateStream e"] + per_task["GenerateStream f"], 4);
  EXPECT_EQ(calls.size(), 10u);
  expect_keys_match_tasks(calls);
}

// Absurd flags exit 2 before any call (a deadline of 1e300 s overflowed the clock, 10^9 bench
// requests died in bad_alloc, and CLI11's own exit codes were 104-114).
TEST_F(RoutingKeyTest, LoractlRefusesAbsurdFlagsBeforeAnyCall) {
  auto run = [&](const std::string& args) {
    const std::string command =
        std::string(LORACTL_PATH) + " --server " + address_ + " " + args + " >/dev/null 2>&1";
    const int rc = std::system(command.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  for (const char* timeout : {"-1", "nan", "1e300"})
    EXPECT_EQ(run(std::string("--timeout ") + timeout + " generate --ids 5"), 2) << timeout;
  EXPECT_EQ(run("generate --ids 5 --max-tokens 99999999999"), 2);
  EXPECT_EQ(run("bench --requests 1000000000 --vocab-size 10 --no-progress"), 2);
  EXPECT_EQ(run("bench --rate 1e-300 --vocab-size 10 --no-progress"), 2);
  EXPECT_EQ(run("bench --prompt-len 1:2000000000 --vocab-size 10 --no-progress"), 2);
  EXPECT_TRUE(recorder_.take().empty());
  EXPECT_EQ(run("--timeout 30 generate --ids 5"), 0);
}

// `loractl bench --http` sends the same header with every /v1/completions request that names a
// task; a fake HTTP server records it beside the body's `model`.
TEST(HttpRoutingKeyTest, HttpLoadGeneratorSendsEachRequestsTask) {
  httplib::Server server;
  std::mutex mu;
  std::map<std::pair<std::string, std::string>, int> seen;  // (model, header) → requests
  server.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) {
    const nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
    const std::string model = body.is_object() ? body.value("model", "") : "?";
    const std::string header =
        req.get_header_value_count(kTaskMetadataKey) == 1
            ? req.get_header_value(kTaskMetadataKey)
            : "(" + std::to_string(req.get_header_value_count(kTaskMetadataKey)) + " headers)";
    {
      std::lock_guard<std::mutex> lock(mu);
      ++seen[{model, header}];
    }
    res.set_content("data: {\"choices\":[{\"index\":0,\"token_ids\":[1]}]}\n\ndata: [DONE]\n\n",
                    "text/event-stream");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  // Bound and listening: connections wait in the backlog until the accept loop runs.
  std::thread listener([&] { server.listen_after_bind(); });

  std::vector<TraceRequest> trace;
  for (const char* task : {"t0", "t1", "", "t0", "t2"}) {
    TraceRequest r;
    r.task_id = task;
    r.prompt = {5, 6};
    r.max_tokens = 1;
    trace.push_back(r);
  }
  HttpLoadOptions options;
  options.address = "127.0.0.1:" + std::to_string(port);
  options.timeout_s = 30;
  const LoadResult result = run_http_load(options, trace, [](const LoadProgress&) {});
  server.stop();
  listener.join();

  EXPECT_EQ(result.succeeded, 5);
  const std::map<std::pair<std::string, std::string>, int> expected = {
      {{"t0", "t0"}, 2}, {{"t1", "t1"}, 1}, {{"t2", "t2"}, 1}, {{"", "(0 headers)"}, 1}};
  EXPECT_EQ(seen, expected);
}

}  // namespace
}  // namespace loraserve::client
