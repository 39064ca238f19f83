#include "server/serving_state.h"

#include <algorithm>

namespace loraserve::server {

ServerGauges ServingState::gauges(const engine::EngineStats* stats) const {
  ServerGauges g;
  g.preparing_bytes = static_cast<int64_t>(preparing_.held());
  g.requests_waiting_to_prepare = static_cast<int64_t>(preparing_.waiting());
  engine::Engine* e = engine();
  if (e == nullptr) return g;
  g.host_adapters = static_cast<int64_t>(e->adapters().size());
  g.max_host_adapters = e->options().max_host_adapters;
  std::vector<std::string> waiting = loader_->loading_tasks();
  g.requests_loading_adapter = loader_->requests_waiting();
  if (stats != nullptr) {
    g.running_tasks = stats->running_tasks;
    waiting.insert(waiting.end(), stats->waiting_tasks.begin(), stats->waiting_tasks.end());
  }
  std::sort(waiting.begin(), waiting.end());
  waiting.erase(std::unique(waiting.begin(), waiting.end()), waiting.end());
  g.waiting_tasks = std::move(waiting);
  return g;
}

std::string ServingState::metrics_exposition() const {
  engine::Engine* e = engine();
  if (e == nullptr) return metrics_->render(nullptr, gauges(nullptr));
  const engine::EngineStats stats = e->stats();
  return metrics_->render(&stats, gauges(&stats));
}

Status ServingState::begin_call() {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return unavailable_error("the server is shutting down; retry on another replica");
  if (engine() == nullptr) return unavailable_error("the model is still loading; retry shortly");
  if (calls_ >= max_calls_) {
    return resource_exhausted_error(
        "{} inference calls are open, the limit (--max-concurrent-streams); retry later", calls_);
  }
  ++calls_;
  return ok_status();
}

void ServingState::end_call() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--calls_ == 0) idle_.notify_all();
}

bool ServingState::add_sequence(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  sequences_.insert(id);
  return cancelling_;
}

void ServingState::remove_sequence(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  sequences_.erase(id);
}

void ServingState::start_draining() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

bool ServingState::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

bool ServingState::wait_for_calls(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_.wait_until(lock, deadline, [&] { return calls_ == 0; });
}

size_t ServingState::calls_in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_;
}

size_t ServingState::cancel_sequences() {
  std::set<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelling_ = true;
    ids = sequences_;
  }
  engine::Engine* e = engine();
  if (e == nullptr) return 0;
  for (uint64_t id : ids) e->cancel(id);
  return ids.size();
}

}  // namespace loraserve::server
