// Drives an Engine in tests: builds greedy requests that return their logits, submits them, and
// collects each request's tokens, logprobs and logits into a Trace (golden.h) as the engine
// reports them. Not thread-safe: use it on the thread that steps the engine.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/engine.h"
#include "tests/reference/golden.h"

namespace loraserve::testing {

// Greedy (temperature 0), ignore_eos, return_logits, exactly `max_tokens` new tokens.
engine::GenerationRequest greedy_request(std::vector<int32_t> prompt, int32_t max_tokens,
                                         std::string task_id = "");

// Collects the updates of the requests submitted through it, in submission order.
class TraceCollector {
 public:
  // Submits `request` with an on_update that records into this collector (any on_update the
  // request had is replaced). Returns the index of its trace.
  Result<size_t> submit(engine::Engine& engine, engine::GenerationRequest request);

  size_t size() const { return entries_.size(); }
  const Trace& trace(size_t i) const { return entries_[i]->trace; }
  bool finished(size_t i) const { return entries_[i]->finished; }
  engine::FinishReason finish_reason(size_t i) const { return entries_[i]->reason; }
  const Status& error(size_t i) const { return entries_[i]->error; }
  // OK when every request finished without an error; else the first one that did not.
  Status all_finished() const;

 private:
  struct Entry {
    Trace trace;
    bool finished = false;
    engine::FinishReason reason = engine::FinishReason::kNone;
    Status error;
  };
  std::vector<std::unique_ptr<Entry>> entries_;  // stable addresses for the callbacks
};

// Submits every request at once, runs the engine until idle, and returns their traces.
Result<std::vector<Trace>> run_together(engine::Engine& engine,
                                        std::vector<engine::GenerationRequest> requests);
// Runs each request by itself (the engine idle before and after each one).
Result<std::vector<Trace>> run_alone(engine::Engine& engine,
                                     std::vector<engine::GenerationRequest> requests);

}  // namespace loraserve::testing
