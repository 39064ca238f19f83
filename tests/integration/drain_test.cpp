// SIGTERM under load: health turns NOT_SERVING, new requests get UNAVAILABLE, every request
// the server accepted completes, and the process exits 0. With a short drain timeout, requests
// still running at the timeout end with finish_reason CANCELLED (and their tokens so far).
//
// What counts as accepted is what the server started, never the client's clock: a request that
// streamed a message, or whose ID the server logged as finished, was admitted and must complete;
// a refused one must have streamed nothing and be absent from the log. A request the client sent
// just before the signal may still reach the server after it and be refused, correctly.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "client/client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kClients = 24;
constexpr int32_t kMaxTokens = 120;

struct Sample {
  std::string request_id;
  Clock::time_point sent, received;
  Status status;
  int messages = 0;
  int tokens = 0;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
};

struct Load {
  std::vector<Sample> samples;
  bool saw_not_serving = false;
  Clock::time_point signalled;
};

// Streams long requests from kClients threads until each sees a failure, sends SIGTERM after
// `warmup`, and watches health.
Load run_load_and_terminate(ServerProcess& server, std::chrono::milliseconds warmup) {
  client::ClientOptions o = client_options(server);
  o.timeout_s = 120;
  client::Client client(o);
  Load load;
  std::mutex mu;
  std::atomic<bool> signalled{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      for (int n = 0;; ++n) {
        Sample s;
        s.request_id = "c" + std::to_string(c) + "-" + std::to_string(n);
        v1::GenerateRequest r;
        r.set_request_id(s.request_id);
        for (int32_t id : {5 + c, 6, 7, 8}) r.mutable_token_ids()->add_ids(id);
        r.mutable_params()->set_max_tokens(kMaxTokens);
        r.mutable_params()->set_temperature(0.0f);
        r.mutable_params()->set_ignore_eos(true);
        s.sent = Clock::now();
        s.status = client.generate_stream(r, [&](const v1::GenerateStreamResponse& m) {
          ++s.messages;
          s.tokens += m.token_ids_size();
          s.finish = m.finish_reason();
          return true;
        });
        s.received = Clock::now();
        const bool failed = !s.status.ok();
        {
          std::lock_guard<std::mutex> lock(mu);
          load.samples.push_back(s);
        }
        if (failed && signalled.load()) return;
      }
    });
  }
  std::this_thread::sleep_for(warmup);
  // The flag first: a client refused because of the signal must see it set, or it would send
  // (and count) one more refused request.
  signalled.store(true);
  load.signalled = Clock::now();
  server.signal(SIGTERM);
  for (int i = 0; i < 200; ++i) {
    auto h = client.health("", false);
    if (!h.ok()) break;  // the server is gone
    if (*h == grpc::health::v1::HealthCheckResponse::NOT_SERVING) {
      load.saw_not_serving = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // More signals while the drain runs change nothing (one that reached a thread OpenBLAS starts
  // before main, with nothing blocked, killed the process: exit 143, streams cut).
  if (load.saw_not_serving) {
    server.signal(SIGTERM);
    server.signal(SIGINT);
  }
  for (auto& t : threads) t.join();
  return load;
}

TEST(Drain, SigtermUnderLoadCompletesEveryAcceptedRequestAndExitsZero) {
  TempDir dir;
  auto server = ServerProcess::start(
      {"--model", kFixtureModel, "--max-batch-size", "4", "--drain-timeout", "60"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const Load load = run_load_and_terminate(**server, std::chrono::milliseconds(1500));
  EXPECT_EQ((*server)->wait(90), 0) << (*server)->log();

  const std::string log = (*server)->log();
  // The server's log line for a request it admitted and finished.
  auto logged_finished = [&](const Sample& s) {
    return log.find("request " + s.request_id + " task (base) prompt 4 completion ") !=
           std::string::npos;
  };
  int completed = 0, finished_after_signal = 0, refused = 0;
  for (const Sample& s : load.samples) {
    SCOPED_TRACE(s.request_id);
    if (s.status.ok()) {
      EXPECT_EQ(s.tokens, kMaxTokens);
      EXPECT_EQ(s.finish, v1::FINISH_REASON_LENGTH);
      EXPECT_TRUE(logged_finished(s));
      ++completed;
      if (s.received > load.signalled) ++finished_after_signal;
      continue;
    }
    // Refused: never a request that the server had started.
    EXPECT_EQ(s.status.code(), StatusCode::kUnavailable) << s.status.to_string();
    EXPECT_EQ(s.messages, 0) << s.status.to_string();
    EXPECT_FALSE(logged_finished(s))
        << "the server finished a request whose client saw " << s.status.to_string();
    ++refused;
  }
  // The drain had work: the server counted the calls it had admitted when the signal came.
  const size_t draining = log.find("draining: ");
  ASSERT_NE(draining, std::string::npos) << log_tail(**server);
  const int in_flight_at_signal = std::atoi(log.c_str() + draining + 10);
  EXPECT_GE(in_flight_at_signal, 1) << log.substr(draining, 80);
  EXPECT_EQ(refused, kClients);  // each client stops at its first refusal
  EXPECT_TRUE(load.saw_not_serving);
  EXPECT_NE(log.find("received SIGTERM; draining"), std::string::npos);
  EXPECT_EQ(log.find("drain timeout"), std::string::npos);
  // The later signals reached the server while it drained (requests were still in flight).
  EXPECT_NE(log.find("received SIGINT while draining"), std::string::npos) << log_tail(**server);
  if (HasFailure()) std::cerr << "server log (end):\n" << log_tail(**server) << "\n";
  std::cout << completed << " requests completed, " << finished_after_signal
            << " of them after SIGTERM; " << in_flight_at_signal << " calls in flight at SIGTERM, "
            << refused << " refused after\n";
}

TEST(Drain, RequestsLeftAtTheDrainTimeoutEndCancelled) {
  TempDir dir;
  auto server = ServerProcess::start(
      {"--model", kFixtureModel, "--max-batch-size", "1", "--drain-timeout", "0.05"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  const Load load = run_load_and_terminate(**server, std::chrono::milliseconds(500));
  EXPECT_EQ((*server)->wait(60), 0) << (*server)->log();
  int cancelled = 0;
  for (const Sample& s : load.samples) {
    if (!s.status.ok()) {
      EXPECT_EQ(s.status.code(), StatusCode::kUnavailable) << s.status.to_string();
      EXPECT_EQ(s.messages, 0) << s.status.to_string();
      continue;
    }
    if (s.finish == v1::FINISH_REASON_CANCELLED) {
      EXPECT_LT(s.tokens, kMaxTokens);
      ++cancelled;
    } else {
      EXPECT_EQ(s.tokens, kMaxTokens);
    }
  }
  EXPECT_GE(cancelled, 1);
  EXPECT_NE((*server)->log().find("drain timeout: cancelling"), std::string::npos);
  if (HasFailure()) std::cerr << "server log (end):\n" << log_tail(**server) << "\n";
}

}  // namespace
}  // namespace loraserve::testing
