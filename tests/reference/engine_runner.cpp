#include "tests/reference/engine_runner.h"

namespace loraserve::testing {

engine::GenerationRequest greedy_request(std::vector<int32_t> prompt, int32_t max_tokens,
                                         std::string task_id) {
  engine::GenerationRequest r;
  r.prompt_token_ids = std::move(prompt);
  r.task_id = std::move(task_id);
  r.params.temperature = 0.0f;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.return_logits = true;
  return r;
}

Result<size_t> TraceCollector::submit(engine::Engine& engine, engine::GenerationRequest request) {
  auto entry = std::make_unique<Entry>();
  Entry* e = entry.get();
  request.on_update = [e](const engine::SequenceUpdate& u) {
    for (size_t k = 0; k < u.new_tokens.size(); ++k) {
      e->trace.token_ids.push_back(u.new_tokens[k].token_id);
      e->trace.logprobs.push_back(u.new_tokens[k].logprob);
      if (k < u.logits.size()) {
        e->trace.logits.push_back(u.logits[k]);
        e->trace.top2_gap.push_back(top2_gap(u.logits[k]));
      }
    }
    if (u.finished) {
      e->finished = true;
      e->reason = u.finish_reason;
      e->error = u.error;
    }
  };
  LS_RETURN_IF_ERROR(engine.submit(std::move(request)).status());
  entries_.push_back(std::move(entry));
  return entries_.size() - 1;
}

Status TraceCollector::all_finished() const {
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = *entries_[i];
    if (!e.finished) return internal_error("request {} did not finish", i);
    if (e.reason == engine::FinishReason::kError)
      return e.error.with_context(fmt::format("request {}", i));
  }
  return ok_status();
}

Result<std::vector<Trace>> run_together(engine::Engine& engine,
                                        std::vector<engine::GenerationRequest> requests) {
  TraceCollector collector;
  for (auto& r : requests) LS_RETURN_IF_ERROR(collector.submit(engine, std::move(r)).status());
  LS_RETURN_IF_ERROR(engine.run_until_idle());
  LS_RETURN_IF_ERROR(collector.all_finished());
  std::vector<Trace> traces;
  for (size_t i = 0; i < collector.size(); ++i) traces.push_back(collector.trace(i));
  return traces;
}

Result<std::vector<Trace>> run_alone(engine::Engine& engine,
                                     std::vector<engine::GenerationRequest> requests) {
  std::vector<Trace> traces;
  for (auto& r : requests) {
    std::vector<engine::GenerationRequest> one;
    one.push_back(std::move(r));
    LS_ASSIGN_OR_RETURN(std::vector<Trace> t, run_together(engine, std::move(one)));
    traces.push_back(std::move(t[0]));
  }
  return traces;
}

}  // namespace loraserve::testing
