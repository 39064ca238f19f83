// ServingState: what the gRPC services share with the Server that runs them: the engine once it
// is loaded, the metrics and the adapter loader, whether the server is draining, the calls and
// sequences in flight (so a drain can wait for them, or cancel them at its timeout), and the
// budget of request bytes being prepared (parsed, rendered, tokenized) at once.
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/byte_budget.h"
#include "common/status.h"
#include "engine/engine.h"
#include "server/adapter_loader.h"
#include "server/server_metrics.h"

namespace loraserve::server {

class ServingState {
 public:
  // `max_calls`: calls admitted at once (--max-concurrent-streams); `preparing_bytes`: request
  // bytes prepared at once (--max-preparing-bytes).
  explicit ServingState(int32_t max_calls, size_t preparing_bytes = kDefaultPreparingBytes)
      : max_calls_(static_cast<size_t>(max_calls)), preparing_(preparing_bytes) {}
  static constexpr size_t kDefaultPreparingBytes = 16u << 20;
  size_t max_calls() const { return max_calls_; }

  // A request claims its size in bytes here before it is parsed, rendered and tokenized, and
  // releases it once submitted (common/byte_budget.h says why).
  ByteBudget& preparing() { return preparing_; }

  // The engine, or nullptr while the model loads.
  engine::Engine* engine() const { return engine_.load(std::memory_order_acquire); }
  // Publishes the loaded engine; calls are admitted from now on. REQUIRES: called once, after
  // set_loader.
  void set_engine(engine::Engine* engine) { engine_.store(engine, std::memory_order_release); }
  // The server's metrics. REQUIRES: set before any service starts.
  void set_metrics(ServerMetrics* metrics) { metrics_ = metrics; }
  ServerMetrics* metrics() const { return metrics_; }
  // Resolves task IDs to adapters (loading on demand); valid once engine() is.
  void set_loader(AdapterLoader* loader) { loader_ = loader; }
  AdapterLoader* loader() const { return loader_; }

  // What the metrics and GetStats read besides the engine's stats (`stats` null while the model
  // loads).
  ServerGauges gauges(const engine::EngineStats* stats) const;
  // The Prometheus text exposition (GET /metrics); answers while the model loads too.
  std::string metrics_exposition() const;

  // Admits a new call: UNAVAILABLE while the model loads or the server drains,
  // RESOURCE_EXHAUSTED when max_calls are open. Each admitted call ends with exactly one
  // end_call().
  Status begin_call();
  void end_call();
  // Sequences submitted to the engine and not finished (cancelled when a drain times out).
  // add_sequence returns true once cancel_sequences() has run: a call that was still being
  // prepared then must cancel the sequence it just submitted itself.
  [[nodiscard]] bool add_sequence(uint64_t id);
  void remove_sequence(uint64_t id);

  // Refuses new calls from now on.
  void start_draining();
  bool draining() const;
  // Waits until no admitted call is left, or `deadline`. True when none is left.
  bool wait_for_calls(std::chrono::steady_clock::time_point deadline);
  size_t calls_in_flight() const;
  // Cancels every sequence in flight in the engine, and (through add_sequence) every one
  // submitted from now on; returns how many were in flight.
  size_t cancel_sequences();

  // "req-<n>", for requests that bring no request_id.
  std::string next_request_id() { return "req-" + std::to_string(next_request_.fetch_add(1)); }

 private:
  const size_t max_calls_;
  ByteBudget preparing_;
  std::atomic<engine::Engine*> engine_{nullptr};
  ServerMetrics* metrics_ = nullptr;
  AdapterLoader* loader_ = nullptr;
  std::atomic<uint64_t> next_request_{1};

  mutable std::mutex mu_;
  std::condition_variable idle_;
  bool draining_ = false;
  size_t calls_ = 0;
  std::set<uint64_t> sequences_;
  bool cancelling_ = false;  // cancel_sequences() has run
};

}  // namespace loraserve::server
