// Iteration-level scheduling: which sequences run in the next step, and how many of their
// tokens. Decoding sequences go first (one row each), then chunks of prompts still being
// prefilled, then newly admitted prompts, within the step's row and sequence budgets. A prompt
// is admitted only when the KV cache can hold all of it; when a decoding sequence needs a block
// and none is free, the most recently admitted sequence is preempted (its blocks freed, to be
// recomputed later from its tokens). A waiting sequence whose adapter has no ready slot yet is
// passed over for the ones behind it. Not thread-safe (engine thread).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/sequence.h"

namespace loraserve::engine {

struct SchedulerOptions {
  int32_t max_batch_size = 32;       // sequences per step
  int32_t max_batched_tokens = 512;  // rows per step; long prompts are prefilled in chunks
};

struct ScheduledChunk {
  Sequence* seq = nullptr;
  int32_t num_tokens = 0;  // rows this step: tokens [num_computed, num_computed + num_tokens)
  bool samples() const {
    return seq->num_computed + num_tokens == static_cast<int32_t>(seq->tokens.size());
  }
};

class Scheduler {
 public:
  // `can_start(seq)` says whether a waiting sequence may be admitted now apart from KV blocks
  // (its adapter has a ready slot); a sequence that may not is skipped, not waited for, so it
  // never holds up the others.
  Scheduler(const SchedulerOptions& options, KvCache* cache, std::function<bool(Sequence*)> can_start)
      : options_(options), cache_(cache), can_start_(std::move(can_start)) {}

  void add(Sequence* seq) { waiting_.push_back(seq); }
  // Takes `seq` out of the queues and frees its blocks (finished, cancelled, failed).
  void remove(Sequence* seq);
  // The next step's chunks; empty when nothing can run. Sequences preempted on the way are
  // appended to `preempted` (they are back in the waiting queue).
  std::vector<ScheduledChunk> next(std::vector<Sequence*>* preempted);

  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const std::vector<Sequence*>& running() const { return running_; }

 private:
  void preempt(Sequence* seq);

  SchedulerOptions options_;
  KvCache* cache_;
  std::function<bool(Sequence*)> can_start_;
  std::deque<Sequence*> waiting_;   // FIFO; preempted sequences return to the front
  std::vector<Sequence*> running_;  // in admission order
};

}  // namespace loraserve::engine
