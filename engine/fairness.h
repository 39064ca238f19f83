// Fairness between tasks: which waiting request starts next when several tasks compete for the
// server, and which running one to preempt when the KV cache runs out.
//
//   kFifo: the oldest waiting request first (a preempted one before all others), whatever its
//     task; the preempted sequence is the most recently admitted one.
//   kVtc: Virtual Token Counter scheduling (Sheng et al., "Fairness in Serving Large Language
//     Models", OSDI 2024) across task IDs; the base model (task "") is a task like any other.
//     Each task has a counter of the service it received: prompt_weight per prompt token when
//     one of its requests starts (once: recomputing a preempted sequence is the server's cost)
//     and output_weight per generated token, both divided by the task's weight (its share).
//     The next request is the oldest one of the task with the smallest counter among the tasks
//     with waiting requests (ties: the task whose oldest request arrived first). A task whose
//     queue was empty rejoins at max(its counter, the smallest counter of the tasks waiting) —
//     or, when none waits, the counter of the last task whose queue emptied — so idle time
//     earns no credit. The preempted sequence is the most recently admitted one of the task
//     with the largest counter: the one most over its share.
//
// It never stalls: a task whose requests cannot start now (their adapter is loading) is passed
// over for the next task, and a task alone gets the whole server (the order is then FIFO's).
// Not thread-safe (engine thread).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "engine/sequence.h"

namespace loraserve::engine {

enum class FairnessPolicy { kFifo, kVtc };

struct FairnessOptions {
  FairnessPolicy policy = FairnessPolicy::kVtc;
  // Counter units per token (the paper's w_p and w_q, and its defaults: an output token costs
  // the server about twice a prompt token).
  double prompt_weight = 1.0;
  double output_weight = 2.0;
  // A task's share relative to the others (default 1): its counter grows by tokens / weight,
  // so a task of weight 2 gets twice the service of a task of weight 1 when both wait.
  std::map<std::string, double> task_weights;
};

std::string_view fairness_policy_name(FairnessPolicy policy);  // "fifo", "vtc"
// "fifo" or "vtc"; INVALID_ARGUMENT otherwise.
Result<FairnessPolicy> parse_fairness_policy(std::string_view name);
// "TASK=W" (an empty TASK is the base model) with W a positive number; INVALID_ARGUMENT
// naming --task-weight otherwise.
Result<std::pair<std::string, double>> parse_task_weight(std::string_view spec);
// Weights positive and finite; INVALID_ARGUMENT naming the one that is not.
Status validate_fairness_options(const FairnessOptions& options);

// The waiting sequences per task, the tasks' counters, and the choices above.
class FairQueue {
 public:
  explicit FairQueue(FairnessOptions options) : options_(std::move(options)) {}

  // A new request waits behind every other.
  void arrive(Sequence* seq);
  // A running sequence was preempted: it waits in front of every other.
  void preempted(Sequence* seq);
  // The sequence the policy starts next among those `startable` accepts, which is asked in the
  // policy's order (and may be asked about several); nullptr when it accepts none.
  Sequence* next(const std::function<bool(Sequence*)>& startable) const;
  // `seq` (waiting) starts running; its prompt is charged on its first start.
  void start(Sequence* seq);
  // A running sequence produced one token.
  void served_token(const Sequence& seq);
  // `seq` ends, waiting or running.
  void end(Sequence* seq);
  // The sequence to preempt among `candidates` (running, in admission order, not empty).
  Sequence* victim(std::span<Sequence* const> candidates) const;

  size_t num_waiting() const { return order_.size(); }
  // Waiting sequences, oldest first (preempted ones before all others).
  std::vector<Sequence*> waiting() const;
  // The task's virtual token counter (0 for a task never seen).
  double counter(const std::string& task) const;
  // Tasks the queue keeps state for (waiting, running, or ahead of the others).
  size_t num_tasks() const { return tasks_.size(); }
  const FairnessOptions& options() const { return options_; }

 private:
  struct Task {
    std::map<int64_t, Sequence*> waiting;  // by place in line
    int32_t running = 0;
    double counter = 0.0;
  };
  Task& task_of(const Sequence& seq);
  double weight(const std::string& task) const;
  // The counter a task rejoining now is lifted to (see above); `except` is left out.
  double floor(const Task* except) const;
  void enqueue(Sequence* seq, int64_t key);
  void dequeue(Sequence* seq);
  // Forgets idle tasks whose counter a rejoin would lift anyway.
  void forget_idle_tasks();

  FairnessOptions options_;
  std::unordered_map<std::string, Task> tasks_;
  std::map<int64_t, Sequence*> order_;                // every waiting sequence, by place in line
  std::unordered_map<const Sequence*, int64_t> key_;  // place in line of each waiting sequence
  int64_t last_arrival_ = 0;                          // keys of arrivals count up from 1 ...
  int64_t first_preempted_ = 0;                       // ... of preempted ones down from -1
  double last_left_ = 0.0;  // the counter of the last task whose queue emptied (the paper's l)
};

}  // namespace loraserve::engine
