// The engine: one model on one backend, its KV cache, adapters and tokenizer; the inbox that
// other threads submit to; and the step loop, which runs the stages of a step (docs/
// ARCHITECTURE.md, "One step"), each in its own file: admission.h, scheduler.h, step_builder.h,
// model.h (the forward), sampling.h, stop_conditions.h, delivery.h.
// Thread-safety: submit, cancel and stats may be called from any thread; step, run_until_idle
// and run_loop from one thread only (the engine thread), which also runs the update callbacks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stop_token>
#include <unordered_map>
#include <vector>

#include "adapters/adapter_cache.h"
#include "adapters/registry.h"
#include "common/status.h"
#include "engine/admission.h"
#include "engine/fairness.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/request.h"
#include "engine/sampling.h"
#include "engine/scheduler.h"
#include "engine/step_builder.h"
#include "formats/hf_config.h"
#include "kernels/backend.h"
#include "tokenizer/tokenizer.h"

namespace loraserve::engine {

struct EngineOptions {
  int32_t max_batch_size = 32;       // sequences per step
  int32_t max_batched_tokens = 512;  // rows per step (prompt chunks + decode rows)
  int32_t block_size = 16;           // KV-cache slots per block
  int64_t kv_cache_bytes = 0;        // 0: enough for max_batch_size full contexts, within memory
  int32_t max_queue = 1024;          // sequences waiting or running; beyond: RESOURCE_EXHAUSTED
  int32_t max_queue_per_task = 0;    // the same for one task (0: no per-task limit)
  int32_t default_max_tokens = 256;  // when a request sets none (capped by the context)
  int32_t max_lora_rank = 64;        // largest adapter rank accepted
  int32_t max_device_adapters = 16;  // adapter slots on the device (LRU among unpinned)
  int32_t max_host_adapters = 64;    // adapters loaded at once (held in host memory)
  RequestLimits request_limits;      // what one request may bring (checked at submission)
  FairnessOptions fairness;          // which task's request starts next (fairness.h)
};

struct EngineStats {
  int32_t running = 0;
  int32_t waiting = 0;
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_free = 0;
  uint64_t steps = 0;
  uint64_t preemptions = 0;
  uint64_t tokens_generated = 0;
  uint64_t prompt_tokens = 0;
  uint64_t requests_finished = 0;
  int32_t adapter_slots_total = 0;
  int32_t adapter_slots_used = 0;
  uint64_t adapter_loads = 0;  // placements of an adapter into a device slot
  uint64_t adapter_evictions = 0;
  // Requests waiting for their adapter to get a ready slot, per task.
  std::vector<std::pair<std::string, int32_t>> waiting_for_adapter;
  // Where each resident adapter version lives: (version, slot).
  std::vector<std::pair<uint64_t, int32_t>> adapter_slots;
  // Tasks (base model excluded) with sequences running, and waiting to be admitted; sorted,
  // distinct.
  std::vector<std::string> running_tasks;
  std::vector<std::string> waiting_tasks;
};

class Engine {
 public:
  // Estimates the memory the weights and KV cache need, refuses when the backend lacks it, then
  // loads the model. With a tokenizer, updates carry text and requests may set stop strings.
  static Result<std::unique_ptr<Engine>> create(
      const formats::ModelConfig& config, WeightSource& weights,
      std::unique_ptr<kernels::Backend> backend, const EngineOptions& options,
      std::unique_ptr<tokenizer::Tokenizer> tokenizer = nullptr);
  ~Engine();

  // Validates the request and queues it, pinning the adapter version its task is served by now.
  // Returns the sequence id. Errors: INVALID_ARGUMENT (names the field), NOT_FOUND (unknown
  // task), RESOURCE_EXHAUSTED (queue full, or the request can never fit the cache).
  Result<uint64_t> submit(GenerationRequest request);
  // The checks submit() runs on the request's own fields first (INVALID_ARGUMENT naming the
  // field; RESOURCE_EXHAUSTED when it can never fit the cache), without queueing it: front ends
  // run them before they resolve the task, so a malformed request never loads an adapter.
  // Thread-safe.
  Status validate(const GenerationRequest& request) const {
    return validate_request(request, limits_).status();
  }
  // Ends the sequence within one step with FinishReason::kCancelled; unknown ids are ignored.
  void cancel(uint64_t sequence_id);

  // Runs one step (admits submissions, schedules, forwards, samples, calls back).
  Status step();
  // True while any sequence is queued or running, or submissions are pending.
  bool has_work() const;
  // Steps until every submitted sequence has finished.
  Status run_until_idle();
  // Steps while there is work and waits for submissions otherwise, until `stop` is requested.
  Status run_loop(std::stop_token stop);

  EngineStats stats() const;
  const formats::ModelConfig& config() const { return model_->config(); }
  const EngineOptions& options() const { return options_; }
  kernels::Backend& backend() const { return *backend_; }
  // The model's tokenizer, or nullptr when the engine has none. Thread-safe.
  const tokenizer::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // The task ID → adapter map; thread-safe, shared with the admin front end.
  adapters::AdapterRegistry& adapters() const { return *registry_; }
  const Model& model() const { return *model_; }
  // The dtype the weight matrices are kept in (GetServerInfo, metrics). Thread-safe.
  DType weight_dtype() const { return model_->weight_dtype(); }

 private:
  Engine(std::unique_ptr<kernels::Backend> backend, const EngineOptions& options)
      : backend_(std::move(backend)),
        options_(options),
        queue_(options.max_queue, options.max_queue_per_task) {}

  // Admission's hook: acquires the sequence's adapter slot; true once it is ready. A sequence
  // whose slot's upload failed is noted in upload_failed_ and never ready.
  bool adapter_ready(Sequence* seq);
  // Sleeps a moment while an adapter upload is in flight and no sequence could run.
  void wait_for_uploads();
  // Grows with every step run, request finished and adapter upload seen to land.
  uint64_t progress_mark() const;
  // Ends the sequences whose adapter upload failed with that error (their slot holds nothing
  // usable; once nobody pins it, the next request uploads the adapter afresh).
  void finish_failed_uploads();
  // Takes submissions and cancellations from other threads; ends sequences past their deadline.
  void drain_inbox();
  // Appends sampled row k's token to `seq`, checks the stop conditions and delivers the update.
  void complete_row(Sequence* seq, size_t k, Sequence::Clock::time_point now);
  // Ends `seq`: out of planning, its adapter slot released, its last update delivered.
  void finish(Sequence* seq, FinishReason reason, Status error, SequenceUpdate* update);
  // Ends every sequence of a failed step with `error`.
  Status fail_step(const StepPlan& plan, const Status& error);
  // After every step: frees device copies of adapter versions nobody holds, publishes stats.
  void end_step();
  // Copies the engine-thread counters into what stats() returns.
  void publish_stats();

  std::unique_ptr<kernels::Backend> backend_;
  EngineOptions options_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<adapters::AdapterRegistry> registry_;
  std::unique_ptr<adapters::AdapterCache> adapter_cache_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  AdmissionLimits limits_;
  QueueLimits queue_;

  // Engine-thread state: the stages of a step.
  std::unique_ptr<Admission> admission_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<StepBuilder> step_builder_;
  std::unique_ptr<Sampler> sampler_;
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> live_;
  std::vector<Sequence*> upload_failed_;  // found by adapter_ready during planning
  kernels::StepMeta meta_;
  EngineStats counters_;

  // Shared with submitting threads.
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<uint64_t> cancels_;
  std::atomic<uint64_t> next_id_{1};
  EngineStats published_;
};

}  // namespace loraserve::engine
