// Step planning: which sequences run in the next step, and how many of their tokens. Running
// sequences go first, in the order they were admitted — one decode row each, or the next chunk
// of a prompt still being prefilled — then Admission starts waiting ones while the step's row
// budget (max_batched_tokens) and sequence budget (max_batch_size) last. When a running sequence
// needs a KV block and none is free, the most recently admitted sequence not yet planned for
// this step is preempted: its blocks are freed and it waits again, to be recomputed from its
// tokens. Not thread-safe (engine thread).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/admission.h"
#include "engine/block_allocator.h"
#include "engine/sequence.h"

namespace loraserve::engine {

struct SchedulerOptions {
  int32_t max_batch_size = 32;       // sequences per step
  int32_t max_batched_tokens = 512;  // rows per step; long prompts are prefilled in chunks
};

// Rows of one sequence in a step: its tokens [num_computed, num_computed + num_tokens).
struct ScheduledChunk {
  Sequence* seq = nullptr;
  int32_t num_tokens = 0;
  // True when the chunk reaches the sequence's last token, whose logits pick the next one.
  bool samples() const {
    return seq->num_computed + num_tokens == static_cast<int32_t>(seq->tokens.size());
  }
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;  // running sequences first, in admission order
  std::vector<Sequence*> preempted;    // sent back to wait while planning this step
};

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, BlockAllocator* kv, Admission* admission)
      : options_(options), kv_(kv), admission_(admission) {}

  // A new request: it waits in Admission.
  void add(Sequence* seq) { admission_->add(seq); }
  // Takes `seq` out of planning and frees its blocks (finished, cancelled, failed).
  void remove(Sequence* seq);
  // The next step; no chunks when nothing can run.
  StepPlan plan();

  size_t num_running() const { return running_.size(); }
  const std::vector<Sequence*>& running() const { return running_; }

 private:
  void preempt(Sequence* seq);

  SchedulerOptions options_;
  BlockAllocator* kv_;
  Admission* admission_;
  std::vector<Sequence*> running_;  // in admission order
};

}  // namespace loraserve::engine
