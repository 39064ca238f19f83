// Admission: every reason a request is refused or waits, in one place.
//
// Refused at submission (Engine::submit, on the caller's thread), in this order:
//   validate_request: the RequestLimits first (request_limits.h: the task ID before anything
//     else, then the request ID, stop strings and ids, logprobs, the prompt's length), then the
//     fields against the model: INVALID_ARGUMENT naming the field (and the flag of a limit);
//     RESOURCE_EXHAUSTED when prompt + max_tokens could never fit the whole KV cache.
//   QueueLimits::reserve: RESOURCE_EXHAUSTED when the server already holds max_queue requests,
//     or the request's task max_queue_per_task of them (only that task is refused then).
//   hold_adapter: NOT_FOUND when no adapter is served under the task ID.
// Waits (Admission::admit, on the engine thread, each step), until:
//   its adapter has a ready device slot — a request that waits for one is passed over, so it
//     never holds up the requests behind it;
//   the KV cache can hold all its tokens — the first request that does not fit stops
//     admission for the step, so a long prompt is not overtaken forever;
//   its turn comes, as the fairness policy orders the waiting requests (fairness.h): FIFO, or
//     VTC across tasks (default), which also picks the sequence to preempt;
//   and the step has rows and a sequence slot left (the scheduler's budgets).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "adapters/registry.h"
#include "common/status.h"
#include "engine/block_allocator.h"
#include "engine/fairness.h"
#include "engine/request.h"
#include "engine/request_limits.h"
#include "engine/sequence.h"

namespace loraserve::engine {

// What a request is checked against at submission: the limits the flags set, and what the
// model, its tokenizer and the KV cache allow.
struct AdmissionLimits {
  RequestLimits request;
  int32_t vocab_size = 0;
  int64_t max_context = 0;           // prompt and output together
  int32_t default_max_tokens = 256;  // when the request sets none (capped by the context)
  bool has_tokenizer = false;        // stop strings need one
  int32_t kv_blocks = 0;             // the whole KV cache
  int32_t kv_block_size = 1;
};

// Checks the request's own fields; returns the max_tokens it resolves to.
Result<int32_t> validate_request(const GenerationRequest& request, const AdmissionLimits& limits);

// A hold on the adapter version the request runs on (empty for the base model, task ""): the one
// it brings when its caller resolved the task, else the one `task` is served by now, else
// NOT_FOUND.
Result<adapters::AdapterLease> hold_adapter(adapters::AdapterRegistry& registry,
                                            GenerationRequest& request);

// How many requests the engine holds (waiting or running), in all and per task. Thread-safe.
class QueueLimits {
 public:
  // max_queue_per_task 0: no limit per task.
  QueueLimits(int32_t max_queue, int32_t max_queue_per_task)
      : max_queue_(max_queue), max_per_task_(max_queue_per_task) {}
  // Takes a place for one request of `task`, or RESOURCE_EXHAUSTED naming the limit.
  Status reserve(const std::string& task);
  // Gives back a place taken by reserve(task).
  void release(const std::string& task);
  int32_t held() const;
  int32_t held(const std::string& task) const;

 private:
  const int32_t max_queue_;
  const int32_t max_per_task_;
  mutable std::mutex mu_;
  int32_t held_ = 0;
  std::unordered_map<std::string, int32_t> per_task_;  // tasks holding at least one place
};

// The waiting requests and the choice of the next one to start. Not thread-safe (engine thread).
class Admission {
 public:
  // `adapter_ready(seq)` acquires the sequence's adapter slot when it has none, and says whether
  // the slot is ready (always true for the base model).
  Admission(BlockAllocator* kv, FairnessOptions fairness,
            std::function<bool(Sequence*)> adapter_ready)
      : kv_(kv), queue_(std::move(fairness)), adapter_ready_(std::move(adapter_ready)) {}

  // A new request waits behind the others.
  void add(Sequence* seq) { queue_.arrive(seq); }
  // A preempted sequence waits in front of every other.
  void requeue(Sequence* seq) { queue_.preempted(seq); }
  // A sequence ends, waiting (cancelled, past its deadline) or running.
  void remove(Sequence* seq) { queue_.end(seq); }

  // The next waiting sequence allowed to start, with KV blocks for all its tokens allocated and
  // taken out of the queue; nullptr when none may start now (see the list above).
  Sequence* admit();
  // A running sequence produced one token (its task's share of the service grows).
  void served_token(const Sequence& seq) { queue_.served_token(seq); }
  // The running sequence to preempt among `candidates` (in admission order, not empty).
  Sequence* victim(std::span<Sequence* const> candidates) const {
    return queue_.victim(candidates);
  }

  size_t num_waiting() const { return queue_.num_waiting(); }
  // Waiting sequences, in arrival order (preempted ones first).
  std::vector<Sequence*> waiting() const { return queue_.waiting(); }
  const FairQueue& fairness() const { return queue_; }

 private:
  BlockAllocator* kv_;
  FairQueue queue_;
  std::function<bool(Sequence*)> adapter_ready_;
};

}  // namespace loraserve::engine
