// `loractl --servers A,B,C load/unload`: one admin call per replica, all of them made even when
// some fail, one result line per replica in the order given, exit 1 when any failed. Fake
// servers stand in for the replicas.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/client/fake_server.h"

namespace loraserve::client {
namespace {

using fake::FakeServer;
using fake::SeenCall;

struct LoractlRun {
  int exit_code = -1;
  std::vector<std::string> lines;  // stdout
};

LoractlRun loractl(const std::string& args) {
  const std::string command =
      std::string(LORACTL_PATH) + " --token secret --timeout 30 " + args + " 2>/dev/null";
  LoractlRun run;
  FILE* out = popen(command.c_str(), "r");
  if (out == nullptr) return run;
  std::string text;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, out)) text.append(buffer, n);
  const int rc = pclose(out);
  run.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) run.lines.push_back(line);
  return run;
}

// An address where nothing can listen: a Unix socket in a folder that does not exist.
constexpr char kDeadAddress[] = "unix:/nonexistent-loraserve-test/admin.sock";

class FanOutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto& r : replicas_) ASSERT_TRUE(r.started());
  }

  std::string servers() const {
    return replicas_[0].address() + "," + replicas_[1].address() + "," + replicas_[2].address();
  }

  FakeServer replicas_[3];
};

TEST_F(FanOutTest, LoadGoesToEveryReplica) {
  const LoractlRun run = loractl("--servers " + servers() + " load sql sql-v1");
  EXPECT_EQ(run.exit_code, 0);
  ASSERT_EQ(run.lines.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(run.lines[i], replicas_[i].address() + "\tloaded sql version 1 from sql-v1");
    const std::vector<SeenCall> calls = replicas_[i].recorder().take();
    ASSERT_EQ(calls.size(), 1u) << i;
    EXPECT_EQ(calls[0].method, "LoadAdapter");
    EXPECT_EQ(calls[0].task_id, "sql");
    EXPECT_EQ(calls[0].path, "sql-v1");
    EXPECT_FALSE(calls[0].replace);
    EXPECT_EQ(calls[0].authorizations, std::vector<std::string>{"Bearer secret"});
    EXPECT_EQ(calls[0].routing_keys, std::vector<std::string>{"sql"});
  }
}

TEST_F(FanOutTest, ReplaceAndUnloadGoToEveryReplica) {
  LoractlRun run = loractl("--servers " + servers() + " load --replace sql sql-v2");
  EXPECT_EQ(run.exit_code, 0);
  ASSERT_EQ(run.lines.size(), 3u);
  EXPECT_EQ(run.lines[1], replicas_[1].address() + "\treplaced sql version 2 from sql-v2");
  run = loractl("unload sql --servers " + servers());  // the flag may follow the command
  EXPECT_EQ(run.exit_code, 0);
  ASSERT_EQ(run.lines.size(), 3u);
  EXPECT_EQ(run.lines[2], replicas_[2].address() + "\tunloaded sql (version 1)");
  for (auto& r : replicas_) {
    const std::vector<SeenCall> calls = r.recorder().take();
    ASSERT_EQ(calls.size(), 2u);
    EXPECT_TRUE(calls[0].replace);
    EXPECT_EQ(calls[0].path, "sql-v2");
    EXPECT_EQ(calls[1].method, "UnloadAdapter");
    EXPECT_EQ(calls[1].task_id, "sql");
  }
}

// Failures are reported per replica and do not stop the others.
TEST_F(FanOutTest, FailuresAreReportedPerReplica) {
  replicas_[1].admin().set_failure(
      grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "task 'sql' is served already"));
  const std::string dead = kDeadAddress;
  const LoractlRun run = loractl("--servers " + servers() + "," + dead + " load sql sql-v1");
  EXPECT_EQ(run.exit_code, 1);
  ASSERT_EQ(run.lines.size(), 4u);
  EXPECT_EQ(run.lines[0], replicas_[0].address() + "\tloaded sql version 1 from sql-v1");
  EXPECT_EQ(run.lines[1],
            replicas_[1].address() + "\tERROR ALREADY_EXISTS: task 'sql' is served already");
  EXPECT_EQ(run.lines[2], replicas_[2].address() + "\tloaded sql version 1 from sql-v1");
  EXPECT_EQ(run.lines[3].rfind(dead + "\tERROR UNAVAILABLE: ", 0), 0u) << run.lines[3];
  for (auto& r : replicas_) EXPECT_EQ(r.recorder().take().size(), 1u);
}

TEST_F(FanOutTest, JsonLines) {
  replicas_[2].admin().set_failure(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown task 'x'"));
  const LoractlRun run = loractl("--json --servers " + servers() + " unload x");
  EXPECT_EQ(run.exit_code, 1);
  ASSERT_EQ(run.lines.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const nlohmann::json j = nlohmann::json::parse(run.lines[i]);
    EXPECT_EQ(j.at("server"), replicas_[i].address());
    EXPECT_EQ(j.at("ok"), i != 2);
    if (i != 2) {
      EXPECT_EQ(j.at("response").at("version"), "1");  // uint64: a JSON string in proto3 JSON
    } else {
      EXPECT_EQ(j.at("error").at("code"), "NOT_FOUND");
      EXPECT_EQ(j.at("error").at("message"), "unknown task 'x'");
    }
  }
}

TEST_F(FanOutTest, OtherCommandsRefuseServers) {
  for (const char* command : {"generate --ids 5", "list", "stats", "health"}) {
    const LoractlRun run = loractl("--servers " + servers() + " " + command);
    EXPECT_EQ(run.exit_code, 2) << command;
  }
  for (auto& r : replicas_) EXPECT_TRUE(r.recorder().take().empty());
}

}  // namespace
}  // namespace loraserve::client
