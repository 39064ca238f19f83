#include "engine/scheduler.h"

#include <algorithm>

namespace loraserve::engine {

void Scheduler::remove(Sequence* seq) {
  cache_->free_all(&seq->blocks);
  seq->num_computed = 0;
  std::erase(running_, seq);
  std::erase(waiting_, seq);
}

void Scheduler::preempt(Sequence* seq) {
  cache_->free_all(&seq->blocks);
  seq->num_computed = 0;
  ++seq->preemptions;
  std::erase(running_, seq);
  waiting_.push_front(seq);
}

std::vector<ScheduledChunk> Scheduler::next(std::vector<Sequence*>* preempted) {
  std::vector<ScheduledChunk> chunks;
  int32_t rows_left = options_.max_batched_tokens;
  int32_t seqs_left = options_.max_batch_size;

  // Running sequences, oldest first: one decode row each, or the next chunk of their prompt.
  for (size_t i = 0; i < running_.size() && rows_left > 0 && seqs_left > 0;) {
    Sequence* s = running_[i];
    const int32_t remaining = s->num_uncomputed();
    const int32_t take = std::min(remaining, rows_left);
    const int32_t need = cache_->blocks_for(s->num_computed + take);
    bool fits = true;
    while (static_cast<int32_t>(s->blocks.size()) < need) {
      if (auto b = cache_->allocate()) {
        s->blocks.push_back(*b);
        continue;
      }
      Sequence* victim = running_.back();
      preempt(victim);
      preempted->push_back(victim);
      if (victim == s) {
        fits = false;
        break;
      }
    }
    if (!fits) continue;  // s itself went back to waiting; running_[i] is now the next one
    chunks.push_back({s, take});
    rows_left -= take;
    --seqs_left;
    ++i;
  }

  // Admit waiting prompts in order while the cache can hold each one whole; a prompt whose
  // adapter is not ready is passed over, one that does not fit stops admission (FIFO).
  for (auto it = waiting_.begin(); it != waiting_.end() && rows_left > 0 && seqs_left > 0;) {
    Sequence* s = *it;
    if (!can_start_(s)) {
      ++it;
      continue;
    }
    const int32_t need = cache_->blocks_for(static_cast<int64_t>(s->tokens.size()));
    if (cache_->num_free_blocks() < need) break;
    for (int32_t b = 0; b < need; ++b) s->blocks.push_back(*cache_->allocate());
    it = waiting_.erase(it);
    running_.push_back(s);
    const int32_t take = std::min(s->num_uncomputed(), rows_left);
    chunks.push_back({s, take});
    rows_left -= take;
    --seqs_left;
  }
  return chunks;
}

}  // namespace loraserve::engine
