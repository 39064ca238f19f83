// GenerationCall: one generation request on its way through the server, whatever carried it.
// The gRPC reactors and the HTTP handlers both drive one, so they make the same decisions with
// the same engine: admission (refused while the model loads or the server drains), tokenizing a
// text prompt, submitting to the engine (which validates every field, naming it, and batches the
// sequence with every other one, of any task and any transport), cancellation from any thread
// at any time (even before the engine knows the sequence), the end of the sequence, and the
// request's log line and its task's totals. Thread-safe. The transport keeps it alive until the
// engine's final update has been handled; its destructor ends the admitted call, so a drain
// waits for it.
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

// What a sequence's final update says, kept past the engine's callback.
struct SequenceSummary {
  uint64_t sequence_id = 0;
  engine::FinishReason finish_reason = engine::FinishReason::kNone;
  Status error;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  double queue_ms = 0.0;
  double ttft_ms = 0.0;
  double total_ms = 0.0;  // accepted → finished, measured by the server
};

class GenerationCall {
 public:
  using UpdateFn = std::function<void(const engine::SequenceUpdate&)>;

  explicit GenerationCall(ServingState* state) : state_(state) {}
  ~GenerationCall();
  GenerationCall(const GenerationCall&) = delete;
  GenerationCall& operator=(const GenerationCall&) = delete;

  // Admits the call: UNAVAILABLE while the model loads or the server drains. Call it first; a
  // refused call is logged by the caller (log_rejected) and goes no further.
  Status admit();
  // Tokenizes a text prompt and submits the request. From then on the engine calls `on_update`
  // on its thread after every step that touched the sequence, and once at the end (finished);
  // on an error nothing was submitted and `on_update` is never called.
  // REQUIRES: admit() succeeded; called once.
  Status submit(GenerationInput input, UpdateFn on_update);
  // Ends the sequence with FinishReason::kCancelled within a step (any thread, any time,
  // idempotent; before submit, the sequence ends as soon as it is submitted).
  void cancel();
  // On the engine thread, with the final update: no cancellation reaches the engine after it.
  // `total_ms` is measured from this object's construction.
  SequenceSummary finish(const engine::SequenceUpdate& final_update);

  // Names the request in log lines before submit (which names it from its input): for a
  // request refused before it gets there.
  void identify(std::string request_id, std::string task_id);

  // Counts the request in its task's totals and writes its log line (keep it off the engine
  // thread).
  void log_finished(const SequenceSummary& summary) const;
  // Writes the log line of a request refused before the engine ran it.
  void log_rejected(const Status& status) const;

  // Set by submit (made up when the input had none); "" before.
  const std::string& request_id() const { return request_id_; }
  const std::string& task_id() const { return task_id_; }

 private:
  std::string task_label() const { return task_id_.empty() ? "(base)" : task_id_; }

  ServingState* state_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  bool admitted_ = false;
  std::string request_id_;
  std::string task_id_;
  std::mutex mu_;
  std::optional<uint64_t> sequence_id_;
  bool cancel_requested_ = false;
  bool done_ = false;
};

// The engine's request for `input`: the prompt tokenized when it is text. Errors:
// FAILED_PRECONDITION for text when the model has no tokenizer, INVALID_ARGUMENT naming
// "prompt" when the text does not encode.
Status to_engine_request(GenerationInput input, const engine::Engine& engine,
                         engine::GenerationRequest* out);

}  // namespace loraserve::server
