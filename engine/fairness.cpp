#include "engine/fairness.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace loraserve::engine {

std::string_view fairness_policy_name(FairnessPolicy policy) {
  return policy == FairnessPolicy::kFifo ? "fifo" : "vtc";
}

Result<FairnessPolicy> parse_fairness_policy(std::string_view name) {
  if (name == "fifo") return FairnessPolicy::kFifo;
  if (name == "vtc") return FairnessPolicy::kVtc;
  return invalid_argument_error("--fairness must be fifo or vtc, got '{}'",
                                name.substr(0, std::min<size_t>(name.size(), 32)));
}

Result<std::pair<std::string, double>> parse_task_weight(std::string_view spec) {
  const size_t eq = spec.find('=');
  const std::string_view shown = spec.substr(0, std::min<size_t>(spec.size(), 64));
  if (eq == std::string_view::npos)
    return invalid_argument_error("--task-weight '{}' must be TASK=WEIGHT", shown);
  const std::string_view number = spec.substr(eq + 1);
  double w = 0.0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), w);
  if (ec != std::errc() || end != number.data() + number.size() || !std::isfinite(w) || w <= 0) {
    return invalid_argument_error("--task-weight '{}': the weight must be a positive number",
                                  shown);
  }
  return std::pair<std::string, double>(std::string(spec.substr(0, eq)), w);
}

Status validate_fairness_options(const FairnessOptions& o) {
  if (!std::isfinite(o.prompt_weight) || o.prompt_weight < 0)
    return invalid_argument_error("the prompt token weight must be >= 0, got {}", o.prompt_weight);
  if (!std::isfinite(o.output_weight) || o.output_weight < 0)
    return invalid_argument_error("the output token weight must be >= 0, got {}", o.output_weight);
  for (const auto& [task, w] : o.task_weights) {
    if (!std::isfinite(w) || w <= 0)
      return invalid_argument_error("the weight of task '{}' must be positive, got {}", task, w);
  }
  return ok_status();
}

FairQueue::Task& FairQueue::task_of(const Sequence& seq) { return tasks_[seq.request.task_id]; }

double FairQueue::weight(const std::string& task) const {
  auto it = options_.task_weights.find(task);
  return it == options_.task_weights.end() ? 1.0 : it->second;
}

double FairQueue::floor(const Task* except) const {
  double lowest = std::numeric_limits<double>::infinity();
  for (const auto& [name, t] : tasks_) {
    if (&t != except && !t.waiting.empty()) lowest = std::min(lowest, t.counter);
  }
  return std::isinf(lowest) ? last_left_ : lowest;
}

void FairQueue::enqueue(Sequence* seq, int64_t key) {
  Task& t = task_of(*seq);
  if (t.waiting.empty()) t.counter = std::max(t.counter, floor(&t));
  t.waiting.emplace(key, seq);
  order_.emplace(key, seq);
  key_.emplace(seq, key);
}

void FairQueue::dequeue(Sequence* seq) {
  auto it = key_.find(seq);
  Task& t = task_of(*seq);
  t.waiting.erase(it->second);
  order_.erase(it->second);
  key_.erase(it);
  if (t.waiting.empty()) last_left_ = t.counter;
}

void FairQueue::arrive(Sequence* seq) { enqueue(seq, ++last_arrival_); }

void FairQueue::preempted(Sequence* seq) {
  --task_of(*seq).running;
  enqueue(seq, --first_preempted_);
}

Sequence* FairQueue::next(const std::function<bool(Sequence*)>& startable) const {
  if (options_.policy == FairnessPolicy::kFifo) {
    for (const auto& [key, seq] : order_) {
      if (startable(seq)) return seq;
    }
    return nullptr;
  }
  std::vector<const Task*> backlogged;
  for (const auto& [name, t] : tasks_) {
    if (!t.waiting.empty()) backlogged.push_back(&t);
  }
  std::sort(backlogged.begin(), backlogged.end(), [](const Task* a, const Task* b) {
    if (a->counter != b->counter) return a->counter < b->counter;
    return a->waiting.begin()->first < b->waiting.begin()->first;
  });
  for (const Task* t : backlogged) {
    for (const auto& [key, seq] : t->waiting) {
      if (startable(seq)) return seq;
    }
  }
  return nullptr;
}

void FairQueue::start(Sequence* seq) {
  Task& t = task_of(*seq);
  ++t.running;
  if (seq->preemptions == 0) {
    t.counter += options_.prompt_weight * seq->prompt_len / weight(seq->request.task_id);
  }
  dequeue(seq);  // after the charge: a task leaving the queue leaves with what it was served
}

void FairQueue::served_token(const Sequence& seq) {
  task_of(seq).counter += options_.output_weight / weight(seq.request.task_id);
}

void FairQueue::end(Sequence* seq) {
  if (key_.count(seq)) {
    dequeue(seq);
  } else {
    --task_of(*seq).running;
  }
  const Task& t = task_of(*seq);
  if (t.waiting.empty() && t.running == 0) forget_idle_tasks();
}

void FairQueue::forget_idle_tasks() {
  // The floor never decreases (counters only grow, and a rejoining task is lifted to it), so
  // an idle task at or below it would be lifted to at least its counter on return anyway.
  const double f = floor(nullptr);
  std::erase_if(tasks_, [f](const auto& entry) {
    const Task& t = entry.second;
    return t.waiting.empty() && t.running == 0 && t.counter <= f;
  });
}

Sequence* FairQueue::victim(std::span<Sequence* const> candidates) const {
  if (options_.policy == FairnessPolicy::kFifo) return candidates.back();
  // The most recently admitted sequence of the task with the largest counter: walking from the
  // back, the first sequence met of each task is its most recent one.
  Sequence* best = nullptr;
  double best_counter = -std::numeric_limits<double>::infinity();
  for (auto it = candidates.rbegin(); it != candidates.rend(); ++it) {
    const double c = counter((*it)->request.task_id);
    if (c > best_counter) {
      best = *it;
      best_counter = c;
    }
  }
  return best;
}

std::vector<Sequence*> FairQueue::waiting() const {
  std::vector<Sequence*> out;
  out.reserve(order_.size());
  for (const auto& [key, seq] : order_) out.push_back(seq);
  return out;
}

double FairQueue::counter(const std::string& task) const {
  auto it = tasks_.find(task);
  return it == tasks_.end() ? 0.0 : it->second.counter;
}

}  // namespace loraserve::engine
