#include "server/inference_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "server/generation_call.h"
#include "server/wire.h"
#include "tokenizer/tokenizer.h"

namespace loraserve::server {
namespace {

using Clock = std::chrono::steady_clock;

// The call's deadline on the engine's clock; nullopt when the client set none.
std::optional<Clock::time_point> engine_deadline(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline - now > std::chrono::hours(24 * 365)) return std::nullopt;
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - now);
}

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

// What GenerateReactor and GenerateStreamReactor share: the GenerationCall (admission,
// tokenizing, submitting, cancellation, the log line), parsing, the call's deadline, refusal
// before the engine sees the request, and the reference count that deletes the reactor once gRPC
// is done with it (OnDone) and the engine's final update has been handled. The sequence's
// updates go to Derived::on_update on the engine thread. `Message` is the call's request type;
// `request_of` picks the GenerateRequest out of it.
template <typename Derived, typename GrpcReactor>
class SequenceReactor : public GrpcReactor {
 public:
  SequenceReactor(ServingState* state, Executor* writer, grpc::CallbackServerContext* context)
      : writer_(writer), context_(context), call_(state) {}

  // gRPC's thread: admits the call, then has `service` prepare it on a preparing thread.
  template <typename Message, typename RequestOf>
  void start(InferenceService* service, const grpc::ByteBuffer* bytes, RequestOf request_of) {
    Status st = call_.admit();
    if (!st.ok()) return finish_now(st);
    // The request and this reactor live until Finish, which only prepare() or what it starts
    // calls.
    st = service->prepare([this, bytes, request_of] { prepare<Message>(bytes, request_of); });
    if (!st.ok()) finish_now(st);
  }

  // A preparing thread: parses, tokenizes and submits.
  template <typename Message, typename RequestOf>
  void prepare(const grpc::ByteBuffer* bytes, RequestOf request_of) {
    // A client that gave up while its call waited here costs nothing more.
    if (context_->IsCancelled()) return finish_now(cancelled_error("the client cancelled"));
    // Parsing and tokenizing take many times the message's bytes (ServingState::preparing).
    ByteBudget::Claim preparing = call_.state()->preparing().claim(bytes->Length());
    Message parsed;
    Status st = parse_message(*bytes, &parsed);
    if (!st.ok()) return finish_now(st);
    const v1::GenerateRequest& in = request_of(parsed);
    with_logprobs_ = in.params().has_logprobs();
    call_.identify(in.request_id(), in.task_id());
    auto input = to_generation_input(in);
    if (!input.ok()) return finish_now(input.status());
    input->deadline = engine_deadline(*context_);
    Derived* self = static_cast<Derived*>(this);
    // The engine's reference, released after the final update, and the submission's: answered
    // at once, or on a loader thread when the task's adapter loads on demand first (this
    // thread never waits for a disk). gRPC's own reference does not cover a loader thread, and
    // the engine may finish the sequence (and the call be done) before submit returns there, so
    // the reactor lives until `submitted` has run.
    refs_.fetch_add(2);
    call_.submit(
        std::move(input).value(), [self](const engine::SequenceUpdate& u) { self->on_update(u); },
        [this](const Status& submitted) {
          if (!submitted.ok()) {
            finish_now(submitted);
            unref();  // the engine's: it will send no update
          }
          unref();  // the submission's
        });
  }

  void OnDone() override { unref(); }

 protected:
  void finish_now(const Status& status) {
    call_.log_rejected(status);
    this->Finish(to_grpc(status));
  }
  void unref() {
    if (refs_.fetch_sub(1) == 1) delete static_cast<Derived*>(this);
  }

  Executor* writer_;
  grpc::CallbackServerContext* context_;
  GenerationCall call_;
  std::atomic<int> refs_{1};  // gRPC's, released in OnDone
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
    summary_ = call_.finish(u);
    writer_->post([this] { finish(); });
  }

  void OnCancel() override {
    client_cancelled_.store(true);
    call_.cancel();
  }

 private:
  // Writer thread, after the final update.
  void finish() {
    call_.log_finished(summary_);
    grpc::Status status = final_status(summary_, client_cancelled_.load());
    if (status.ok()) {
      response_.set_request_id(call_.request_id());
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
      summary_ = call_.finish(u);
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
      call_.cancel();
      lock.lock();
    }
    pump(lock);
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = true;
    }
    call_.cancel();
  }

 private:
  // Writer thread, after the final update: the request's log line stays off the engine thread.
  void log_finished() {
    call_.log_finished(*summary_);
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
    pending_.set_request_id(call_.request_id());
    Status st = serialize_message(pending_, &out_);
    pending_.Clear();
    if (!st.ok()) {
      broken_ = true;
      lock.unlock();
      call_.cancel();
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
      this, request, [](const v1::GenerateRequest& r) -> const auto& { return r; });
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::GenerateStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  auto* reactor = new GenerateStreamReactor(state_, &writer_, context);
  reactor->start<v1::GenerateStreamRequest>(
      this, request, [](const v1::GenerateStreamRequest& r) -> const auto& { return r.request(); });
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
  // Tokenizing takes CPU and memory in proportion to the text: on a preparing thread, like a
  // generation's prompt. The request, response and reactor live until Finish.
  st = prepare([this, context, request, response, reactor] {
    Status st = [&]() -> Status {
      if (context->IsCancelled()) return cancelled_error("the client cancelled");
      ByteBudget::Claim preparing = state_->preparing().claim(request->Length());
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
  });
  if (!st.ok()) {
    state_->end_call();
    reactor->Finish(to_grpc(st));
  }
  return reactor;
}

InferenceService::InferenceService(ServingState* state)
    : state_(state),
      preparing_(static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 2u, 8u)),
                 state->max_calls()) {}

Status InferenceService::prepare(std::function<void()> job) {
  if (preparing_.post(std::to_string(prepared_.fetch_add(1)), std::move(job))) return ok_status();
  return resource_exhausted_error("{} calls wait to be prepared already; retry later",
                                  state_->max_calls());
}

}  // namespace loraserve::server
