#include "server/executor.h"

namespace loraserve::server {

Executor::~Executor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Executor::post(std::function<void()> job) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
    wake = idle_;
  }
  if (wake) cv_.notify_one();
}

void Executor::run() {
  std::deque<std::function<void()>> batch;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    idle_ = true;
    cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
    idle_ = false;
    if (jobs_.empty()) return;  // stopping, and every posted job has run
    batch.swap(jobs_);
    lock.unlock();
    for (auto& job : batch) job();
    batch.clear();
    lock.lock();
  }
}

}  // namespace loraserve::server
