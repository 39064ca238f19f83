// GenerationCall: one generation request on its way through the server, whatever carried it.
// The gRPC reactors and the HTTP handlers both drive one, so they make the same decisions with
// the same engine: admission (refused while the model loads or the server drains), tokenizing a
// text prompt, submitting to the engine (which validates every field, naming it, and batches the
// sequence with every other one, of any task and any transport), cancellation from any thread
// at any time (even before the engine knows the sequence), the end of the sequence, and the
// request's log line and its metrics. Submitting resolves the task to its adapter, loading it
// on demand when the server does (on a loader thread: a transport thread never waits for a
// disk). Thread-safe. The transport keeps it alive until the engine's final update has been
// handled; its destructor ends the admitted call, so a drain waits for it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"
#include "engine/request.h"
#include "server/serving_state.h"

namespace loraserve::server {

// A generation request as a transport parsed it from its wire format: the prompt not tokenized
// yet, nothing validated beyond the wire format's own rules.
struct GenerationInput {
  std::string request_id;  // "": the server makes one up
  std::string task_id;     // "": the base model
  // Text (UTF-8, encoded with the model's tokenizer) or token ids of the model's vocabulary.
  std::variant<std::string, std::vector<int32_t>> prompt;
  // For a text prompt: add the special tokens tokenizer.json's post-processor adds (BOS...).
  // A prompt rendered from a chat template carries its own, so chat sets false.
  bool add_special_tokens = true;
  engine::SamplingParams params;
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

// What a sequence's final update says, kept past the engine's callback. Times are measured from
// the moment the server accepted the request, so they include waiting for an on-demand load.
struct SequenceSummary {
  uint64_t sequence_id = 0;
  engine::FinishReason finish_reason = engine::FinishReason::kNone;
  Status error;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  bool scheduled = false;        // it reached a step
  double queue_ms = 0.0;         // accepted → first scheduled
  double ttft_ms = 0.0;          // accepted → first token (0 without one)
  double total_ms = 0.0;         // accepted → finished
  double adapter_load_ms = 0.0;  // of which waiting for its adapter to load from disk
};

class GenerationCall {
 public:
  using UpdateFn = std::function<void(const engine::SequenceUpdate&)>;
  using SubmittedFn = std::function<void(Status)>;

  explicit GenerationCall(ServingState* state) : state_(state) {}
  ~GenerationCall();
  GenerationCall(const GenerationCall&) = delete;
  GenerationCall& operator=(const GenerationCall&) = delete;
  ServingState* state() const { return state_; }

  // Admits the call: UNAVAILABLE while the model loads or the server drains. Call it first; a
  // refused call is logged by the caller (log_rejected) and goes no further.
  Status admit();
  // Tokenizes a text prompt, resolves the task to its adapter (loading it when the server loads
  // on demand) and submits the request, then calls `submitted` once with the outcome: on this
  // thread when no load was needed, else on a loader thread once the load has finished (or the
  // request's wait for room in host memory ended: deadline, cancellation, shutdown). After a
  // successful submit the engine calls `on_update` on its thread after every step that touched
  // the sequence, and once at the end (finished); on an error nothing was submitted and
  // `on_update` is never called. The call is used until `submitted` is called, which is its last
  // use on that thread; the final update may come before, so the caller keeps this object alive
  // until both happened. REQUIRES: admit() succeeded; called once.
  void submit(GenerationInput input, UpdateFn on_update, SubmittedFn submitted);
  // The same, waiting for the outcome (for a thread that may wait on a load: HTTP's).
  Status submit(GenerationInput input, UpdateFn on_update);
  // Ends the sequence with FinishReason::kCancelled within a step (any thread, any time,
  // idempotent; before submit, the sequence ends as soon as it is submitted).
  void cancel();
  // On the engine thread, with the final update: no cancellation reaches the engine after it.
  // Counts the request in its task's metrics (before the transport answers). `total_ms` is
  // measured from this object's construction.
  SequenceSummary finish(const engine::SequenceUpdate& final_update);

  // Names the request in log lines and metrics before submit (which names it from its input):
  // for a request refused before it gets there. IDs that break the engine's RequestLimits are
  // not written anywhere: the request is "(unchecked)" (its errors count under "(unknown)").
  void identify(std::string request_id, std::string task_id);

  // Writes the request's log line (keep it off the engine thread).
  void log_finished(const SequenceSummary& summary) const;
  // Counts the error in the task's metrics and writes the log line of a request refused before
  // the engine ran it.
  void log_rejected(const Status& status) const;

  // Set by submit (made up when the input had none); "" before.
  const std::string& request_id() const { return request_id_; }
  const std::string& task_id() const { return task_id_; }

 private:
  using Clock = std::chrono::steady_clock;

  std::string task_label() const;
  const std::string& request_label() const { return named_ ? request_id_ : kUnchecked; }
  // Second half of submit, once the adapter is resolved (on the thread that resolved it).
  Status submit_resolved(engine::GenerationRequest request, Result<adapters::AdapterLease> adapter);
  // The series the request counts in: its task's once the task resolved (or when it is served),
  // else "(unknown)" (a client cannot add series by naming tasks).
  TaskMetrics& task_metrics() const;

  ServingState* state_;
  const Clock::time_point started_ = Clock::now();
  bool admitted_ = false;
  TaskMetrics* metrics_ = nullptr;  // set once the task resolved
  Clock::time_point submitted_at_;  // handed to the engine
  double adapter_load_ms_ = 0.0;
  static inline const std::string kUnchecked = "(unchecked)";
  std::string request_id_;
  std::string task_id_;
  bool named_ = false;  // the IDs passed the limits: the log and the metrics may show them
  std::mutex mu_;
  std::optional<uint64_t> sequence_id_;
  bool cancel_requested_ = false;
  bool done_ = false;
};

// The engine's request for `input`: held to the engine's RequestLimits before anything costly
// (task ID first, then the request ID, stop strings..., the text's length), then the prompt
// tokenized when it is text and its length checked. Errors: INVALID_ARGUMENT naming the field,
// FAILED_PRECONDITION for text when the model has no tokenizer.
Status to_engine_request(GenerationInput input, const engine::Engine& engine,
                         engine::GenerationRequest* out);

}  // namespace loraserve::server
