#include "server/generation_call.h"

#include <spdlog/spdlog.h>

#include <future>

#include "tokenizer/tokenizer.h"

namespace loraserve::server {
namespace {

double millis(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// The status code a request the engine ended answers with (counted in the error metrics);
// nullopt when it succeeded. A cancelled request counts as CANCELLED whoever cancelled it.
std::optional<StatusCode> error_code(const SequenceSummary& s) {
  switch (s.finish_reason) {
    case engine::FinishReason::kError:
      return s.error.code();
    case engine::FinishReason::kDeadline:
      return StatusCode::kDeadlineExceeded;
    case engine::FinishReason::kCancelled:
      return StatusCode::kCancelled;
    default:
      return std::nullopt;
  }
}

}  // namespace

Status to_engine_request(GenerationInput input, const engine::Engine& engine,
                         engine::GenerationRequest* out) {
  const engine::RequestLimits& limits = engine.options().request_limits;
  out->request_id = std::move(input.request_id);
  out->task_id = std::move(input.task_id);
  out->params = std::move(input.params);
  out->deadline = input.deadline;
  LS_RETURN_IF_ERROR(limits.check_request(*out));
  if (auto* text = std::get_if<std::string>(&input.prompt)) {
    LS_RETURN_IF_ERROR(limits.check_prompt_text(*text));
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
  return limits.check_prompt_tokens(out->prompt_token_ids.size());
}

GenerationCall::~GenerationCall() {
  if (admitted_) state_->end_call();
}

Status GenerationCall::admit() {
  LS_RETURN_IF_ERROR(state_->begin_call());
  admitted_ = true;
  return ok_status();
}

void GenerationCall::submit(GenerationInput input, UpdateFn on_update, SubmittedFn submitted) {
  engine::Engine* engine = state_->engine();
  if (input.request_id.empty()) input.request_id = state_->next_request_id();
  identify(input.request_id, input.task_id);
  // A request that waits for room to load its adapter waits until its deadline, or until it is
  // cancelled.
  AdapterLoader::Patience patience{input.deadline, [this] {
                                     std::lock_guard<std::mutex> lock(mu_);
                                     return cancel_requested_;
                                   }};
  engine::GenerationRequest request;
  Status st = to_engine_request(std::move(input), *engine, &request);
  // Every field before the task resolves: a malformed request is INVALID_ARGUMENT whatever its
  // task, and never loads an adapter on demand.
  if (st.ok()) st = engine->validate(request);
  if (!st.ok()) return submitted(st);
  request.on_update = std::move(on_update);
  const Clock::time_point resolving = Clock::now();
  state_->loader()->resolve(
      task_id_,
      [this, request = std::move(request), submitted = std::move(submitted),
       resolving](Result<adapters::AdapterLease> adapter) mutable {
        adapter_load_ms_ = millis(Clock::now() - resolving);
        submitted(submit_resolved(std::move(request), std::move(adapter)));
      },
      std::move(patience));
}

Status GenerationCall::submit(GenerationInput input, UpdateFn on_update) {
  std::promise<Status> outcome;
  std::future<Status> result = outcome.get_future();
  submit(std::move(input), std::move(on_update),
         [&outcome](Status st) { outcome.set_value(std::move(st)); });
  return result.get();
}

Status GenerationCall::submit_resolved(engine::GenerationRequest request,
                                       Result<adapters::AdapterLease> adapter) {
  if (!adapter.ok()) return adapter.status();
  request.adapter = std::move(adapter).value();
  TaskMetrics* metrics = &state_->metrics()->task(task_id_);
  metrics_ = metrics;
  // Counted on the engine thread as the updates come, so the counters are up to date before the
  // client sees its answer: the prompt with the sequence's first update, generated tokens on
  // each.
  request.on_update = [metrics, first = true, forward = std::move(request.on_update)](
                          const engine::SequenceUpdate& u) mutable {
    if (first) ServerMetrics::request_admitted(*metrics, u.prompt_tokens);
    first = false;
    ServerMetrics::tokens_generated(*metrics, u.new_tokens.size());
    forward(u);
  };
  engine::Engine* engine = state_->engine();
  submitted_at_ = Clock::now();
  auto id = engine->submit(std::move(request));
  if (!id.ok()) return id.status();
  std::lock_guard<std::mutex> lock(mu_);
  sequence_id_ = *id;
  if (done_) return ok_status();  // the final update came first (the engine thread is quick)
  // A drain that timed out cancels every sequence it knows of, and those submitted after it.
  if (state_->add_sequence(*id) || cancel_requested_) engine->cancel(*id);
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
  // The engine measures from its submit; the request waited (parsing, tokenizing, its adapter's
  // load) since the server accepted it.
  const double before_engine = millis(submitted_at_ - started_);
  s.scheduled = u.scheduled;
  s.queue_ms = u.scheduled ? before_engine + u.queue_ms : 0.0;
  s.ttft_ms = u.completion_tokens > 0 ? before_engine + u.ttft_ms : 0.0;
  s.total_ms = millis(Clock::now() - started_);
  s.adapter_load_ms = adapter_load_ms_;
  // Recorded here (a few atomic adds), before the transport answers, so that a client that got
  // its answer reads counters that include it.
  FinishedRequest r;
  r.reason = s.finish_reason;
  r.completion_tokens = s.completion_tokens;
  r.scheduled = s.scheduled;
  r.queue_seconds = s.queue_ms / 1e3;
  r.ttft_seconds = s.ttft_ms / 1e3;
  r.e2e_seconds = s.total_ms / 1e3;
  TaskMetrics& metrics = task_metrics();
  ServerMetrics::request_finished(metrics, r);
  if (auto code = error_code(s)) ServerMetrics::request_failed(metrics, *code);
  return s;
}

void GenerationCall::identify(std::string request_id, std::string task_id) {
  const engine::Engine* e = state_->engine();
  request_id_ = std::move(request_id);
  task_id_ = std::move(task_id);
  named_ = e != nullptr && e->options().request_limits.check_request_id(request_id_).ok() &&
           (task_id_.empty() || e->options().request_limits.check_task_id(task_id_).ok());
}

std::string GenerationCall::task_label() const {
  if (!named_) return "(unchecked)";
  return task_id_.empty() ? "(base)" : task_id_;
}

TaskMetrics& GenerationCall::task_metrics() const {
  if (metrics_ != nullptr) return *metrics_;
  ServerMetrics& m = *state_->metrics();
  if (!named_) return m.unknown_task();
  if (task_id_.empty()) return m.task("");
  const engine::Engine* e = state_->engine();
  if (e != nullptr && e->adapters().find(task_id_) != nullptr) return m.task(task_id_);
  return m.unknown_task();
}

void GenerationCall::log_finished(const SequenceSummary& s) const {
  spdlog::info(
      "request {} task {} prompt {} completion {} queue {:.1f} ms ttft {:.1f} ms total {:.1f} ms "
      "{}finish {}{}",
      request_label(), task_label(), s.prompt_tokens, s.completion_tokens, s.queue_ms, s.ttft_ms,
      s.total_ms,
      s.adapter_load_ms >= 0.1 ? fmt::format("(adapter load {:.1f} ms) ", s.adapter_load_ms) : "",
      engine::finish_reason_name(s.finish_reason), s.error.ok() ? "" : ": " + s.error.to_string());
}

void GenerationCall::log_rejected(const Status& status) const {
  ServerMetrics::request_failed(task_metrics(), status.code());
  spdlog::info("request {} task {} rejected: {}", request_label(), task_label(),
               status.to_string());
}

}  // namespace loraserve::server
