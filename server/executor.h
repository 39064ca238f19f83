// Executor: one thread that runs posted jobs in the order they were posted. The server uses one
// to take gRPC work (serializing messages, starting writes and finishes) off the engine thread,
// and one to run adapter loads off gRPC's threads. Thread-safe; the destructor runs the jobs
// still queued, then joins the thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace loraserve::server {

class Executor {
 public:
  Executor() : thread_([this] { run(); }) {}
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  void post(std::function<void()> job);

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  bool idle_ = false;  // the thread waits for a job (only then does post() need to wake it)
  std::thread thread_;
};

}  // namespace loraserve::server
