// ServerMetrics: what `loraserve serve` counts, and its Prometheus exposition (GET /metrics).
// The request path records into a task's series (TaskMetrics, looked up once per request, then
// updated with relaxed atomics); the adapter registry reports loads and evictions through its
// listener; engine-wide values (running and waiting requests, KV blocks, slots, preemptions) are
// read from the engine's published stats at scrape time. GetStats reads the same counters.
// Besides loraserve_* names it writes the vLLM names that the Gateway API Inference Extension's
// endpoint picker reads by default, so an InferencePool of loraserve pods needs no metric flags.
// Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "adapters/registry.h"
#include "common/status.h"
#include "engine/engine.h"
#include "engine/request.h"
#include "server/prometheus.h"

namespace loraserve::server {

struct MetricsOptions {
  // Tasks that get series of their own; requests of tasks seen later count under task="(other)".
  int32_t max_tasks = 256;
};

// Finish reasons that end a request in the engine, in the order of engine::FinishReason.
inline constexpr std::array<engine::FinishReason, 6> kFinishReasons = {
    engine::FinishReason::kLength,   engine::FinishReason::kEos,
    engine::FinishReason::kStop,     engine::FinishReason::kCancelled,
    engine::FinishReason::kDeadline, engine::FinishReason::kError};

// One task's series (task label: its ID, "" for the base model). Owned by ServerMetrics and
// alive as long as it.
struct TaskMetrics {
  std::string task_id;  // the label value
  std::array<prometheus::Counter*, kFinishReasons.size()> finished{};
  prometheus::Counter* prompt_tokens = nullptr;
  prometheus::Counter* generation_tokens = nullptr;
  prometheus::Histogram* ttft = nullptr;
  prometheus::Histogram* tpot = nullptr;
  prometheus::Histogram* e2e = nullptr;
  prometheus::Histogram* queue = nullptr;
  prometheus::CounterFamily* errors = nullptr;  // {task, code}, looked up when one happens
};

// How a request the engine ended went, as measured from its arrival at the server (so the time
// it waited for its adapter to load counts in its queue time and time to first token).
struct FinishedRequest {
  engine::FinishReason reason = engine::FinishReason::kNone;
  int32_t completion_tokens = 0;
  bool scheduled = false;      // it reached a step (else queue time is not observed)
  double queue_seconds = 0.0;  // arrival → first scheduled
  double ttft_seconds = 0.0;   // arrival → first token (observed when completion_tokens >= 1)
  double e2e_seconds = 0.0;    // arrival → finished
};

// One task's totals, for GetStats.
struct TaskTotals {
  std::string task_id;
  uint64_t requests = 0;  // ended by the engine, every finish reason
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  std::map<std::string, uint64_t> finish_reasons;
  std::map<std::string, uint64_t> errors;  // canonical code name → requests
};

// Host-tier adapter activity (the registry's events), for GetStats.
struct AdapterLoadTotals {
  uint64_t host_loads = 0;
  uint64_t on_demand_loads = 0;
  uint64_t host_evictions = 0;
  uint64_t load_failures = 0;
};

// What the scrape needs besides the engine's stats.
struct ServerGauges {
  int32_t requests_loading_adapter = 0;  // waiting for an on-demand load (not in the engine yet)
  // Request bytes being parsed and tokenized (ServingState::preparing), and the requests
  // waiting for room there.
  int64_t preparing_bytes = 0;
  int64_t requests_waiting_to_prepare = 0;
  int64_t host_adapters = 0;
  int32_t max_host_adapters = 0;
  // Tasks (base model excluded) with requests running, and with requests waiting (in the
  // engine's queue or for their adapter's load); sorted, distinct.
  std::vector<std::string> running_tasks;
  std::vector<std::string> waiting_tasks;
};

class ServerMetrics {
 public:
  static Result<std::unique_ptr<ServerMetrics>> create(const MetricsOptions& options);

  // The series of a served task ("" for the base model). REQUIRES: `task_id` is a task the
  // server serves (a label per task ID a client made up would let clients grow the exposition).
  TaskMetrics& task(const std::string& task_id);
  // The series of requests whose task is not served (refused before the engine saw them).
  TaskMetrics& unknown_task() { return *unknown_; }

  // The engine took a request of `prompt_tokens` (its first update).
  static void request_admitted(TaskMetrics& t, int32_t prompt_tokens) {
    t.prompt_tokens->inc(static_cast<uint64_t>(prompt_tokens));
  }
  static void tokens_generated(TaskMetrics& t, size_t n) { t.generation_tokens->inc(n); }
  static void request_finished(TaskMetrics& t, const FinishedRequest& r);
  // A request ended with an error status (refused, failed, deadline, cancelled by its client).
  static void request_failed(TaskMetrics& t, StatusCode code);

  // Registry listener: host-tier loads, failures and evictions.
  void adapter_event(const adapters::RegistryEvent& event);
  AdapterLoadTotals adapter_totals() const;

  // Model facts for the info gauges, set once the model is loaded.
  void set_model_info(const std::string& model, const engine::Engine& engine,
                      const std::string& version);

  // The exposition: every loraserve_* family, then the vLLM-named gauges.
  std::string render(const engine::EngineStats* stats, const ServerGauges& gauges);
  // Sorted by task ID ("(unknown)" and "(other)" included when they counted something).
  std::vector<TaskTotals> task_totals() const;

 private:
  explicit ServerMetrics(const MetricsOptions& options) : options_(options) {}
  Status register_families();
  TaskMetrics* make_task(const std::string& label);
  // Sets the lora_requests_info gauges; their value is the time the label values last changed.
  void set_lora_info(const ServerGauges& gauges);

  MetricsOptions options_;
  prometheus::Registry registry_;

  // Per task.
  prometheus::CounterFamily* finished_ = nullptr;
  prometheus::CounterFamily* errors_ = nullptr;
  prometheus::CounterFamily* prompt_tokens_ = nullptr;
  prometheus::CounterFamily* generation_tokens_ = nullptr;
  prometheus::HistogramFamily* ttft_ = nullptr;
  prometheus::HistogramFamily* tpot_ = nullptr;
  prometheus::HistogramFamily* e2e_ = nullptr;
  prometheus::HistogramFamily* queue_ = nullptr;
  // Server-wide.
  prometheus::GaugeFamily* running_ = nullptr;
  prometheus::GaugeFamily* waiting_ = nullptr;
  prometheus::GaugeFamily* loading_ = nullptr;
  prometheus::GaugeFamily* preparing_bytes_ = nullptr;
  prometheus::GaugeFamily* preparing_waiting_ = nullptr;
  prometheus::GaugeFamily* kv_used_ = nullptr;
  prometheus::GaugeFamily* kv_total_ = nullptr;
  prometheus::GaugeFamily* kv_ratio_ = nullptr;
  prometheus::CounterFamily* preemptions_ = nullptr;
  prometheus::CounterFamily* steps_ = nullptr;
  prometheus::GaugeFamily* adapters_loaded_ = nullptr;   // {tier}
  prometheus::GaugeFamily* adapter_capacity_ = nullptr;  // {tier}
  prometheus::CounterFamily* host_loads_ = nullptr;      // {trigger}
  prometheus::CounterFamily* load_failures_ = nullptr;   // {trigger}
  prometheus::CounterFamily* host_evictions_ = nullptr;
  prometheus::CounterFamily* device_loads_ = nullptr;
  prometheus::CounterFamily* device_evictions_ = nullptr;
  prometheus::HistogramFamily* load_seconds_ = nullptr;  // {trigger}
  prometheus::GaugeFamily* model_info_ = nullptr;
  prometheus::GaugeFamily* lora_info_ = nullptr;
  // vLLM names.
  prometheus::GaugeFamily* vllm_running_ = nullptr;
  prometheus::GaugeFamily* vllm_waiting_ = nullptr;
  prometheus::GaugeFamily* vllm_gpu_cache_ = nullptr;
  prometheus::GaugeFamily* vllm_kv_cache_ = nullptr;
  prometheus::GaugeFamily* vllm_lora_info_ = nullptr;
  prometheus::GaugeFamily* vllm_cache_config_ = nullptr;

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<TaskMetrics>> tasks_;
  TaskMetrics* unknown_ = nullptr;
  TaskMetrics* other_ = nullptr;
  int32_t max_lora_ = 0;
  int32_t block_size_ = 0;
  std::vector<std::string> lora_labels_;  // running, waiting, max_lora as last written
  double lora_changed_at_ = 0.0;          // Unix time
};

}  // namespace loraserve::server
