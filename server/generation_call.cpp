#include "server/generation_call.h"

#include <spdlog/spdlog.h>

#include "tokenizer/tokenizer.h"

namespace loraserve::server {

Status to_engine_request(GenerationInput input, const engine::Engine& engine,
                         engine::GenerationRequest* out) {
  out->request_id = std::move(input.request_id);
  out->task_id = std::move(input.task_id);
  if (auto* text = std::get_if<std::string>(&input.prompt)) {
    const tokenizer::Tokenizer* tok = engine.tokenizer();
    if (tok == nullptr) {
      return failed_precondition_error(
          "prompt: this model has no tokenizer.json, so it takes token ids, not text");
    }
    auto ids = tok->encode(*text, input.add_special_tokens);
    if (!ids.ok()) return ids.status().with_context("prompt text");
    out->prompt_token_ids = std::move(ids).value();
  } else {
    out->prompt_token_ids = std::move(std::get<std::vector<int32_t>>(input.prompt));
  }
  out->params = std::move(input.params);
  out->deadline = input.deadline;
  return ok_status();
}

GenerationCall::~GenerationCall() {
  if (admitted_) state_->end_call();
}

Status GenerationCall::admit() {
  LS_RETURN_IF_ERROR(state_->begin_call());
  admitted_ = true;
  return ok_status();
}

Status GenerationCall::submit(GenerationInput input, UpdateFn on_update) {
  engine::Engine* engine = state_->engine();
  request_id_ = input.request_id.empty() ? state_->next_request_id() : input.request_id;
  input.request_id = request_id_;
  task_id_ = input.task_id;
  engine::GenerationRequest request;
  LS_RETURN_IF_ERROR(to_engine_request(std::move(input), *engine, &request));
  request.on_update = std::move(on_update);
  auto id = engine->submit(std::move(request));
  if (!id.ok()) return id.status();
  std::lock_guard<std::mutex> lock(mu_);
  sequence_id_ = *id;
  if (done_) return ok_status();  // the final update came first (the engine thread is quick)
  state_->add_sequence(*id);
  if (cancel_requested_) engine->cancel(*id);
  return ok_status();
}

void GenerationCall::cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancel_requested_ = true;
  if (sequence_id_ && !done_) state_->engine()->cancel(*sequence_id_);
}

SequenceSummary GenerationCall::finish(const engine::SequenceUpdate& u) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    state_->remove_sequence(u.sequence_id);
  }
  SequenceSummary s;
  s.sequence_id = u.sequence_id;
  s.finish_reason = u.finish_reason;
  s.error = u.error;
  s.prompt_tokens = u.prompt_tokens;
  s.completion_tokens = u.completion_tokens;
  s.queue_ms = u.queue_ms;
  s.ttft_ms = u.ttft_ms;
  s.total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_)
          .count();
  return s;
}

void GenerationCall::identify(std::string request_id, std::string task_id) {
  request_id_ = std::move(request_id);
  task_id_ = std::move(task_id);
}

void GenerationCall::log_finished(const SequenceSummary& s) const {
  state_->record_finished(task_id_, s.prompt_tokens, s.completion_tokens);
  spdlog::info(
      "request {} task {} prompt {} completion {} queue {:.1f} ms ttft {:.1f} ms total {:.1f} ms "
      "finish {}{}",
      request_id_, task_label(), s.prompt_tokens, s.completion_tokens, s.queue_ms, s.ttft_ms,
      s.total_ms, engine::finish_reason_name(s.finish_reason),
      s.error.ok() ? "" : ": " + s.error.to_string());
}

void GenerationCall::log_rejected(const Status& status) const {
  spdlog::info("request {} task {} rejected: {}", request_id_, task_label(), status.to_string());
}

}  // namespace loraserve::server
