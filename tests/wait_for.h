// wait_for: polls a condition that another thread or process makes true, for tests.
#pragma once

#include <chrono>
#include <thread>

namespace loraserve::testing {

// Polls `done` every 5 ms until it holds (true) or 60 s pass (false).
template <typename Done>
bool wait_for(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

}  // namespace loraserve::testing
