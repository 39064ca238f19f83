// Admission: every reason a request is refused or waits, in one place.
//
// Refused at submission (Engine::submit, on the caller's thread), in this order:
//   validate_request: the RequestLimits first (request_limits.h: the task ID before anything
//     else, then the request ID, stop strings and ids, logprobs, the prompt's length), then the
//     fields against the model: INVALID_ARGUMENT naming the field (and the flag of a limit);
//     RESOURCE_EXHAUSTED when prompt + max_tokens could never fit the whole KV cache.
//   QueueLimits::reserve: RESOURCE_EXHAUSTED when the server already holds max_queue requests.
//   hold_adapter: NOT_FOUND when no adapter is served under the task ID.
// Waits (Admission::admit, on the engine thread, each step), until:
//   its adapter has a ready device slot — a request that waits for one is passed over, so it
//     never holds up the requests behind it;
//   the KV cache can hold all its tokens — the first request that does not fit stops
//     admission for the step, so a long prompt is not overtaken forever;
//   its turn comes: the oldest waiting request goes first (a preempted one before all others);
//   and the step has rows and a sequence slot left (the scheduler's budgets).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "adapters/registry.h"
#include "common/status.h"
#include "engine/block_allocator.h"
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

// How many requests the engine holds (waiting or running). Thread-safe.
class QueueLimits {
 public:
  explicit QueueLimits(int32_t max_queue) : max_queue_(max_queue) {}
  // Takes a place for one request, or RESOURCE_EXHAUSTED naming the limit.
  Status reserve();
  // Gives back a place taken by reserve().
  void release() { held_.fetch_sub(1); }
  int32_t held() const { return held_.load(); }

 private:
  const int32_t max_queue_;
  std::atomic<int32_t> held_{0};
};

// The waiting requests and the choice of the next one to start. Not thread-safe (engine thread).
class Admission {
 public:
  // `adapter_ready(seq)` acquires the sequence's adapter slot when it has none, and says whether
  // the slot is ready (always true for the base model).
  Admission(BlockAllocator* kv, std::function<bool(Sequence*)> adapter_ready)
      : kv_(kv), adapter_ready_(std::move(adapter_ready)) {}

  // A new request waits behind the others.
  void add(Sequence* seq) { waiting_.push_back(seq); }
  // A preempted sequence waits in front of every other.
  void requeue(Sequence* seq) { waiting_.push_front(seq); }
  // Takes a sequence that ends while waiting (cancelled, past its deadline) out of the queue.
  void remove(Sequence* seq);

  // The next waiting sequence allowed to start, with KV blocks for all its tokens allocated and
  // taken out of the queue; nullptr when none may start now (see the list above).
  Sequence* admit();

  size_t num_waiting() const { return waiting_.size(); }
  // Waiting sequences, in arrival order (preempted ones first).
  const std::deque<Sequence*>& waiting() const { return waiting_; }

 private:
  BlockAllocator* kv_;
  std::function<bool(Sequence*)> adapter_ready_;
  std::deque<Sequence*> waiting_;
};

}  // namespace loraserve::engine
