#include "server/inference_service.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>

#include "server/wire.h"
#include "tokenizer/tokenizer.h"

namespace loraserve::server {
namespace {

using Clock = std::chrono::steady_clock;

double millis_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// The call's deadline on the engine's clock; nullopt when the client set none.
std::optional<Clock::time_point> engine_deadline(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline - now > std::chrono::hours(24 * 365)) return std::nullopt;
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - now);
}

// The engine's request for `in` without its prompt, once it passed the limits (the task ID
// before anything else).
Result<engine::GenerationRequest> checked_request(const v1::GenerateRequest& in,
                                                  const engine::RequestLimits& limits) {
  engine::GenerationRequest out;
  out.task_id = in.task_id();
  out.request_id = in.request_id();
  out.params = to_engine_params(in.params());
  LS_RETURN_IF_ERROR(limits.check_request(out));
  return out;
}

// Adds the prompt of `in` to `out` (a text prompt tokenized) and checks its length.
Status add_prompt(const v1::GenerateRequest& in, const engine::Engine& engine,
                  const engine::RequestLimits& limits, engine::GenerationRequest* out) {
  switch (in.prompt_case()) {
    case v1::GenerateRequest::kText: {
      LS_RETURN_IF_ERROR(limits.check_prompt_text(in.text()));
      const tokenizer::Tokenizer* tok = engine.tokenizer();
      if (tok == nullptr) {
        return failed_precondition_error(
            "prompt: this model has no tokenizer.json, so it takes token_ids, not text");
      }
      auto ids = tok->encode(in.text(), /*add_special_tokens=*/true);
      if (!ids.ok()) return ids.status().with_context("prompt text");
      out->prompt_token_ids = std::move(ids).value();
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      out->prompt_token_ids.assign(in.token_ids().ids().begin(), in.token_ids().ids().end());
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return invalid_argument_error("prompt is required: set text or token_ids");
  }
  return limits.check_prompt_tokens(out->prompt_token_ids.size());
}

// The server side of one engine sequence: submits it, makes a cancellation reach the engine
// whenever it arrives (even before the sequence id is known), and at the end writes the request
// log line and the task's totals. Thread-safe.
class SequenceHandle {
 public:
  explicit SequenceHandle(ServingState* state) : state_(state) {}

  Status submit(engine::GenerationRequest request) {
    auto id = state_->engine()->submit(std::move(request));
    if (!id.ok()) return id.status();
    std::lock_guard<std::mutex> lock(mu_);
    id_ = *id;
    if (done_) return ok_status();
    state_->add_sequence(*id);
    if (cancel_requested_) state_->engine()->cancel(*id);
    return ok_status();
  }

  void cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_requested_ = true;
    if (id_ && !done_) state_->engine()->cancel(*id_);
  }

  // On the engine thread, with the final update: no cancellation reaches the engine after it.
  void mark_finished(uint64_t sequence_id) {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    state_->remove_sequence(sequence_id);
  }

  // Counts the request in its task's totals and writes its log line.
  void log_finished(const SequenceSummary& s) const {
    state_->record_finished(task_id_.value_or(""), s.prompt_tokens, s.completion_tokens);
    spdlog::info(
        "request {} task {} prompt {} completion {} queue {:.1f} ms ttft {:.1f} ms total {:.1f} "
        "ms finish {}{}",
        request_id_, task_label(), s.prompt_tokens, s.completion_tokens, s.queue_ms, s.ttft_ms,
        s.total_ms, engine::finish_reason_name(s.finish_reason),
        s.error.ok() ? "" : ": " + s.error.to_string());
  }

  // Before the request's IDs passed the limits, the log shows none of them.
  void log_rejected(const Status& status) const {
    spdlog::info("request {} task {} rejected: {}",
                 request_id_.empty() ? "(unchecked)" : request_id_, task_label(),
                 status.to_string());
  }

  const std::string& request_id() const { return request_id_; }
  void set_request_id(std::string id) { request_id_ = std::move(id); }
  void set_task_id(std::string id) { task_id_ = std::move(id); }

 private:
  std::string task_label() const {
    if (!task_id_) return "(unchecked)";
    return task_id_->empty() ? "(base)" : *task_id_;
  }

  ServingState* state_;
  std::string request_id_;
  std::optional<std::string> task_id_;  // set once it passed the limits
  std::mutex mu_;
  std::optional<uint64_t> id_;
  bool cancel_requested_ = false;
  bool done_ = false;
};

// The status a finished sequence ends its call with; OK when a response carries the result.
grpc::Status final_status(const SequenceSummary& u, bool client_cancelled) {
  switch (u.finish_reason) {
    case engine::FinishReason::kError:
      return to_grpc(u.error);
    case engine::FinishReason::kDeadline:
      return grpc::Status(
          grpc::StatusCode::DEADLINE_EXCEEDED,
          fmt::format("the deadline passed after {} generated tokens", u.completion_tokens));
    case engine::FinishReason::kCancelled:
      if (client_cancelled) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      return grpc::Status::OK;  // the server ended it (drain timeout): a CANCELLED finish_reason
    default:
      return grpc::Status::OK;
  }
}

// What GenerateReactor and GenerateStreamReactor share: admission, parsing, submitting the
// sequence (its updates go to Derived::on_update on the engine thread), refusal before the
// engine sees the request, and the reference count that deletes the reactor once gRPC is done
// with it (OnDone) and the engine's final update has been handled. `Message` is the call's
// request type; `request_of` picks the GenerateRequest out of it.
template <typename Derived, typename GrpcReactor>
class SequenceReactor : public GrpcReactor {
 public:
  SequenceReactor(ServingState* state, Executor* writer, grpc::CallbackServerContext* context)
      : state_(state), writer_(writer), context_(context), sequence_(state) {}

  template <typename Message, typename RequestOf>
  void start(const grpc::ByteBuffer* bytes, RequestOf request_of) {
    Status st = state_->begin_call();
    if (!st.ok()) return finish_now(st);
    admitted_ = true;
    Message parsed;
    st = parse_message(*bytes, &parsed);
    if (!st.ok()) return finish_now(st);
    const v1::GenerateRequest& in = request_of(parsed);
    with_logprobs_ = in.params().has_logprobs();
    const engine::RequestLimits& limits = state_->engine()->options().request_limits;
    auto checked = checked_request(in, limits);
    if (!checked.ok()) return finish_now(checked.status());
    engine::GenerationRequest request = std::move(checked).value();
    if (request.request_id.empty()) request.request_id = state_->next_request_id();
    sequence_.set_request_id(request.request_id);
    sequence_.set_task_id(request.task_id);
    st = add_prompt(in, *state_->engine(), limits, &request);
    if (!st.ok()) return finish_now(st);
    request.deadline = engine_deadline(*context_);
    Derived* self = static_cast<Derived*>(this);
    request.on_update = [self](const engine::SequenceUpdate& u) { self->on_update(u); };
    refs_.fetch_add(1);  // the engine's, released after the final update
    st = sequence_.submit(std::move(request));
    if (!st.ok()) {
      refs_.fetch_sub(1);
      return finish_now(st);
    }
  }

  void OnDone() override {
    if (admitted_) state_->end_call();
    unref();
  }

 protected:
  void finish_now(const Status& status) {
    sequence_.log_rejected(status);
    this->Finish(to_grpc(status));
  }
  void unref() {
    if (refs_.fetch_sub(1) == 1) delete static_cast<Derived*>(this);
  }

  ServingState* state_;
  Executor* writer_;
  grpc::CallbackServerContext* context_;
  SequenceHandle sequence_;
  const Clock::time_point started_ = Clock::now();
  std::atomic<int> refs_{1};  // gRPC's, released in OnDone
  bool admitted_ = false;
  bool with_logprobs_ = false;
};

// Generate: gathers the whole result and finishes once. The engine thread only appends tokens;
// the writer serializes the response and finishes the call. Deleted when gRPC is done with it
// and the engine's final update has been handled (two references).
class GenerateReactor final : public SequenceReactor<GenerateReactor, grpc::ServerUnaryReactor> {
 public:
  GenerateReactor(ServingState* state, Executor* writer, grpc::CallbackServerContext* context,
                  grpc::ByteBuffer* response)
      : SequenceReactor(state, writer, context), response_bytes_(response) {}

  // Engine thread. The final update hands the engine's reference to the writer's job.
  void on_update(const engine::SequenceUpdate& u) {
    for (const auto& t : u.new_tokens) append_token(t, with_logprobs_, &response_);
    response_.mutable_text()->append(u.new_text);
    if (!u.finished) return;
    sequence_.mark_finished(u.sequence_id);
    summary_ = summarize(u, millis_since(started_));
    writer_->post([this] { finish(); });
  }

  void OnCancel() override {
    client_cancelled_.store(true);
    sequence_.cancel();
  }

 private:
  // Writer thread, after the final update.
  void finish() {
    sequence_.log_finished(summary_);
    grpc::Status status = final_status(summary_, client_cancelled_.load());
    if (status.ok()) {
      response_.set_request_id(sequence_.request_id());
      set_summary(summary_, &response_);
      Status st = serialize_message(response_, response_bytes_);
      if (!st.ok()) status = to_grpc(st);
    }
    Finish(status);
    unref();
  }

  grpc::ByteBuffer* response_bytes_;
  std::atomic<bool> client_cancelled_{false};
  v1::GenerateResponse response_;  // the engine thread's until the final update, then the writer's
  SequenceSummary summary_;
};

// GenerateStream: the engine thread appends each step's tokens to the pending message and starts
// a write when none is in flight; tokens that arrive while one is in flight are merged into the
// next message, which OnWriteDone starts. Deleted like GenerateReactor.
class GenerateStreamReactor final
    : public SequenceReactor<GenerateStreamReactor, grpc::ServerWriteReactor<grpc::ByteBuffer>> {
 public:
  using SequenceReactor::SequenceReactor;

  // Engine thread. When no write is in flight the new tokens go out at once (the first one
  // included, so the client sees it as soon as it exists); otherwise they wait in `pending_` and
  // OnWriteDone sends them together.
  void on_update(const engine::SequenceUpdate& u) {
    std::unique_lock<std::mutex> lock(mu_);
    for (const auto& t : u.new_tokens) append_token(t, with_logprobs_, &pending_);
    pending_.mutable_text()->append(u.new_text);
    if (u.finished) {
      sequence_.mark_finished(u.sequence_id);
      summary_ = summarize(u, millis_since(started_));
      final_status_ = final_status(*summary_, broken_);
      if (final_status_->ok()) set_summary(*summary_, &pending_);
      refs_.fetch_add(1);  // the log job's
      writer_->post([this] { log_finished(); });
    }
    pump(lock);
    if (lock.owns_lock()) lock.unlock();
    if (u.finished) unref();  // the engine's
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok && !broken_) {
      broken_ = true;
      lock.unlock();
      sequence_.cancel();
      lock.lock();
    }
    pump(lock);
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = true;
    }
    sequence_.cancel();
  }

 private:
  // Writer thread, after the final update: the request's log line stays off the engine thread.
  void log_finished() {
    sequence_.log_finished(*summary_);
    unref();
  }

  // Starts the next write, or the finish, when one is due. REQUIRES: `lock` holds mu_; it is
  // released before calling into gRPC (and may be released on return).
  void pump(std::unique_lock<std::mutex>& lock) {
    if (writing_ || finish_started_) return;
    if (final_status_ && (broken_ || !final_status_->ok())) {
      finish_started_ = true;
      const grpc::Status status = broken_ && final_status_->ok()
                                      ? grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")
                                      : *final_status_;
      lock.unlock();
      Finish(status);
      return;
    }
    if (broken_) return;  // the final update will finish the call
    const bool last = final_status_.has_value();
    if (!last && pending_.token_ids_size() == 0 && pending_.text().empty()) return;
    pending_.set_request_id(sequence_.request_id());
    Status st = serialize_message(pending_, &out_);
    pending_.Clear();
    if (!st.ok()) {
      broken_ = true;
      lock.unlock();
      sequence_.cancel();
      return;
    }
    writing_ = true;
    if (last) finish_started_ = true;
    lock.unlock();
    if (last) {
      StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWrite(&out_);
    }
  }

  std::mutex mu_;
  v1::GenerateStreamResponse pending_;        // tokens not written yet
  std::optional<SequenceSummary> summary_;    // set by the final update
  std::optional<grpc::Status> final_status_;  // likewise
  bool writing_ = false;                      // a StartWrite is in flight
  bool finish_started_ = false;
  bool broken_ = false;  // the client cancelled, or a write failed
  grpc::ByteBuffer out_;
};

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  auto* reactor = new GenerateReactor(state_, &writer_, context, response);
  reactor->start<v1::GenerateRequest>(
      request, [](const v1::GenerateRequest& r) -> const auto& { return r; });
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::GenerateStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  auto* reactor = new GenerateStreamReactor(state_, &writer_, context);
  reactor->start<v1::GenerateStreamRequest>(
      request, [](const v1::GenerateStreamRequest& r) -> const auto& { return r.request(); });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Status st = state_->begin_call();
  if (!st.ok()) {
    reactor->Finish(to_grpc(st));
    return reactor;
  }
  st = [&]() -> Status {
    v1::TokenizeRequest in;
    LS_RETURN_IF_ERROR(parse_message(*request, &in));
    const tokenizer::Tokenizer* tok = state_->engine()->tokenizer();
    if (tok == nullptr)
      return failed_precondition_error(
          "this model has no tokenizer.json: nothing to tokenize with");
    LS_ASSIGN_OR_RETURN(
        auto ids,
        tok->encode(in.text(), in.has_add_special_tokens() ? in.add_special_tokens() : true));
    v1::TokenizeResponse out;
    out.mutable_token_ids()->Add(ids.begin(), ids.end());
    return serialize_message(out, response);
  }();
  state_->end_call();
  reactor->Finish(to_grpc(st));
  return reactor;
}

}  // namespace loraserve::server
