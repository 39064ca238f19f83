// ServerSuite: the base of a gtest suite whose tests share one `loraserve serve` process and one
// client. The suite's SetUpTestSuite prepares dir_ (a fresh TempDir) and calls
// start_suite_server; a test is skipped when the server did not start, and a failing test prints
// the end of the server's log. CRTP, so that every suite has its own server.
#pragma once

#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

#include "client/client.h"
#include "tests/integration/server_process.h"

namespace loraserve::testing {

// Client options for `server`: both addresses, the admin token, a 60 s deadline per call.
inline client::ClientOptions client_options(const ServerProcess& server,
                                            const std::string& admin_token = "") {
  client::ClientOptions o;
  o.address = server.address();
  o.admin_address = server.admin_address();
  o.admin_token = admin_token;
  o.timeout_s = 60;
  return o;
}

template <typename Suite>
class ServerSuite : public ::testing::Test {
 protected:
  // Starts the server with `args` (in dir_, which must exist) and a client with `admin_token`.
  static void start_suite_server(const std::vector<std::string>& args,
                                 const std::string& admin_token = "") {
    auto server = ServerProcess::start(args, dir_->path());
    ASSERT_TRUE(server.ok()) << server.status().to_string();
    server_ = server->release();
    client_ = new client::Client(client_options(*server_, admin_token));
  }

  static void TearDownTestSuite() {
    delete client_;
    client_ = nullptr;
    delete server_;
    server_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (server_ == nullptr) GTEST_SKIP() << "the server did not start";
  }
  void TearDown() override {
    if (HasFailure() && server_ != nullptr)
      std::cerr << "server log (end):\n" << log_tail(*server_) << "\n";
  }

  static inline TempDir* dir_ = nullptr;
  static inline ServerProcess* server_ = nullptr;
  static inline client::Client* client_ = nullptr;
};

}  // namespace loraserve::testing
