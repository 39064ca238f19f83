#include "engine/scheduler.h"

#include <algorithm>

namespace loraserve::engine {

void Scheduler::remove(Sequence* seq) {
  kv_->free_all(&seq->blocks);
  seq->num_computed = 0;
  std::erase(running_, seq);
  admission_->remove(seq);
}

void Scheduler::preempt(Sequence* seq) {
  kv_->free_all(&seq->blocks);
  seq->num_computed = 0;
  ++seq->preemptions;
  std::erase(running_, seq);
  admission_->requeue(seq);
}

StepPlan Scheduler::plan() {
  StepPlan plan;
  int32_t rows_left = options_.max_batched_tokens;
  int32_t seqs_left = options_.max_batch_size;

  // Running sequences, oldest first: one decode row each, or the next chunk of their prompt.
  for (size_t i = 0; i < running_.size() && rows_left > 0 && seqs_left > 0;) {
    Sequence* s = running_[i];
    const int32_t take = std::min(s->num_uncomputed(), rows_left);
    const int32_t need = kv_->blocks_for(s->num_computed + take);
    bool fits = true;
    while (static_cast<int32_t>(s->blocks.size()) < need) {
      if (auto b = kv_->allocate()) {
        s->blocks.push_back(*b);
        continue;
      }
      Sequence* victim = running_.back();
      preempt(victim);
      plan.preempted.push_back(victim);
      if (victim == s) {
        fits = false;
        break;
      }
    }
    if (!fits) continue;  // s itself went back to waiting; running_[i] is now the next one
    plan.chunks.push_back({s, take});
    rows_left -= take;
    --seqs_left;
    ++i;
  }

  // Waiting sequences, as Admission lets them start.
  while (rows_left > 0 && seqs_left > 0) {
    Sequence* s = admission_->admit();
    if (s == nullptr) break;
    running_.push_back(s);
    const int32_t take = std::min(s->num_uncomputed(), rows_left);
    plan.chunks.push_back({s, take});
    rows_left -= take;
    --seqs_left;
  }
  return plan;
}

}  // namespace loraserve::engine
