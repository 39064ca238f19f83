// The engine: one model on one backend, its KV cache and scheduler, and the step loop that
// runs every admitted sequence's next rows in one forward pass per step.
// Thread-safety: Submit, Cancel and stats() may be called from any thread; Step, RunUntilIdle
// and RunLoop from one thread only (the engine thread), which also runs the update callbacks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stop_token>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "formats/hf_config.h"
#include "kernels/backend.h"

namespace loraserve::engine {

struct EngineOptions {
  int32_t max_batch_size = 32;       // sequences per step
  int32_t max_batched_tokens = 512;  // rows per step (prompt chunks + decode rows)
  int32_t block_size = 16;           // KV-cache slots per block
  int64_t kv_cache_bytes = 0;        // 0: enough for max_batch_size full contexts, within memory
  int32_t max_queue = 1024;          // sequences waiting or running; beyond: RESOURCE_EXHAUSTED
  int32_t default_max_tokens = 256;  // when a request sets none (capped by the context)
  int32_t max_lora_rank = 64;        // largest adapter rank accepted
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
};

class Engine {
 public:
  // Estimates the memory the weights and KV cache need, refuses when the backend lacks it, then
  // loads the model.
  static Result<std::unique_ptr<Engine>> create(const formats::ModelConfig& config,
                                                WeightSource& weights,
                                                std::unique_ptr<kernels::Backend> backend,
                                                const EngineOptions& options);
  ~Engine();

  // Validates the request and queues it. Returns the sequence id. Errors: INVALID_ARGUMENT
  // (names the field), RESOURCE_EXHAUSTED (queue full, or the request can never fit the cache).
  Result<uint64_t> submit(GenerationRequest request);
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
  const Model& model() const { return *model_; }

 private:
  Engine(std::unique_ptr<kernels::Backend> backend, const EngineOptions& options)
      : backend_(std::move(backend)), options_(options) {}

  Status validate_request(const GenerationRequest& r, int32_t* max_tokens) const;
  void drain_inbox();
  void finish(Sequence* seq, FinishReason reason, Status error, SequenceUpdate* update);
  void emit(Sequence* seq, SequenceUpdate& update);
  void publish_stats();

  std::unique_ptr<kernels::Backend> backend_;
  EngineOptions options_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Scheduler> scheduler_;

  // Engine-thread state.
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> live_;
  kernels::StepMeta meta_;
  std::vector<kernels::SampleResult> samples_;
  EngineStats counters_;

  // Shared with submitting threads.
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<uint64_t> cancels_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<int32_t> in_system_{0};  // submitted and not yet finished
  EngineStats published_;
};

}  // namespace loraserve::engine
