// KeyedExecutor: a few threads that run posted jobs; jobs posted under the same key run one at
// a time in the order they were posted, jobs under different keys run side by side. The Admin
// service runs loads and unloads on one, keyed by task ID: actions on one task stay ordered,
// and a slow load (a large adapter, a slow disk) holds up only the actions on its own task,
// never the others, as long as fewer than `threads` slow loads run at once. Thread-safe; the
// destructor runs the jobs still queued, then joins the threads.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace loraserve::server {

class KeyedExecutor {
 public:
  // `threads` >= 1; at most `max_queued` jobs wait at once.
  KeyedExecutor(int threads, size_t max_queued);
  ~KeyedExecutor();
  KeyedExecutor(const KeyedExecutor&) = delete;
  KeyedExecutor& operator=(const KeyedExecutor&) = delete;

  // Queues `job` under `key`; false (and the job is dropped) when max_queued jobs wait already.
  bool post(const std::string& key, std::function<void()> job);

 private:
  struct Job {
    std::string key;
    std::function<void()> run;
  };
  void run();
  // The first queued job whose key is neither running nor behind an earlier queued job of the
  // same key; jobs_.end() when none. REQUIRES: mu_ held.
  std::deque<Job>::iterator next_runnable();

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  std::set<std::string> running_;  // keys of the jobs running now
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace loraserve::server
