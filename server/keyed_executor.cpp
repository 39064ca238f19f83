#include "server/keyed_executor.h"

#include <algorithm>

namespace loraserve::server {

KeyedExecutor::KeyedExecutor(int threads, size_t max_queued) : max_queued_(max_queued) {
  for (int i = 0; i < std::max(threads, 1); ++i) threads_.emplace_back([this] { run(); });
}

KeyedExecutor::~KeyedExecutor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

bool KeyedExecutor::post(const std::string& key, std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (jobs_.size() >= max_queued_) return false;
    jobs_.push_back(Job{key, std::move(job)});
  }
  cv_.notify_all();
  return true;
}

std::deque<KeyedExecutor::Job>::iterator KeyedExecutor::next_runnable() {
  std::set<std::string> blocked;
  for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
    if (!running_.count(it->key) && !blocked.count(it->key)) return it;
    blocked.insert(it->key);
  }
  return jobs_.end();
}

void KeyedExecutor::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    auto it = jobs_.end();
    cv_.wait(lock, [&] {
      it = next_runnable();
      return it != jobs_.end() || (stopping_ && jobs_.empty());
    });
    if (it == jobs_.end()) return;  // stopping, and every posted job has run
    Job job = std::move(*it);
    jobs_.erase(it);
    running_.insert(job.key);
    lock.unlock();
    job.run();
    lock.lock();
    running_.erase(job.key);
    // A job of this key may have become runnable, for this thread or another.
    cv_.notify_all();
  }
}

}  // namespace loraserve::server
