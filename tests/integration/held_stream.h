// HeldStream: a request held in flight by an integration test. A GenerateStream call on its own
// thread that reads every message until release() cancels it. A request long enough to be held
// (thousands of tokens) may still end by itself first on a fast machine, which ended() tells: a
// test that needs it in flight checks that after what it observed, and tries again otherwise.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

#include "client/client.h"
#include "tests/wait_for.h"

namespace loraserve::testing {

class HeldStream {
 public:
  HeldStream(const client::Client& c, v1::GenerateRequest request)
      : thread_([this, &c, request = std::move(request)] {
          status_ = c.generate_stream(request, [this](const v1::GenerateStreamResponse&) {
            started_.store(true);
            return !released_.load();
          });
          ended_.store(true);
        }) {}
  ~HeldStream() { release(); }
  HeldStream(const HeldStream&) = delete;
  HeldStream& operator=(const HeldStream&) = delete;

  // A message arrived: the request runs.
  bool started() const { return started_.load(); }
  // The call returned (by itself, or after release()).
  bool ended() const { return ended_.load(); }
  // Cancels the call (at its next message) and waits for it to return.
  void release() {
    released_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  // The call's status. REQUIRES: release() returned.
  const Status& status() const { return status_; }

 private:
  std::atomic<bool> started_{false}, ended_{false}, released_{false};
  Status status_;
  std::thread thread_;
};

}  // namespace loraserve::testing
