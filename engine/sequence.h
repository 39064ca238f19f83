// The engine's state for one request in flight. Owned by the Engine; Admission and the
// Scheduler move pointers to it between their queues. Touched only on the engine thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "adapters/registry.h"
#include "engine/logit_edits.h"
#include "engine/request.h"
#include "engine/stop_conditions.h"
#include "tokenizer/incremental_decoder.h"

namespace loraserve::engine {

struct Sequence {
  using Clock = std::chrono::steady_clock;

  uint64_t id = 0;
  GenerationRequest request;
  int32_t max_tokens = 0;       // resolved from the request and the context
  std::vector<int32_t> tokens;  // prompt followed by the generated tokens
  int32_t prompt_len = 0;
  int32_t num_computed = 0;     // leading tokens whose K/V are in the cache
  std::vector<int32_t> blocks;  // KV-cache block table
  std::mt19937_64 rng;          // this request's own generator: batch-independent sampling
  int32_t preemptions = 0;
  adapters::AdapterLease adapter;  // the version held since submission; empty for the base model
  int32_t slot = -1;               // its adapter cache slot once acquired (pinned until the end)
  // Null unless it asks for penalties, biases, ...; made when it is first scheduled.
  std::unique_ptr<LogitEdits> logit_edits;

  // Text of the generated tokens (with a tokenizer): what the decoder has made final, and how
  // much of it has been delivered (text held back could still become a stop string).
  std::unique_ptr<tokenizer::IncrementalDecoder> detokenizer;
  StopStringMatcher stop_strings;
  std::string text;
  size_t text_delivered = 0;
  int32_t detokenized = 0;    // generated tokens fed to the detokenizer
  bool text_stopped = false;  // a stop string ended the text
  // The text's size once each detokenized token's piece was added (the first `detokenized`).
  std::vector<size_t> text_ends;
  // The leading generated tokens the delivered text comes from (SequenceUpdate::answer_tokens).
  int32_t answer_tokens = 0;
  // The last generated token ended the request (EOS or a stop token id): its text is left out
  // of the answer, as Hugging Face's generate and vLLM leave it out.
  bool ended_by_token = false;

  Clock::time_point submitted_at;
  std::optional<Clock::time_point> first_scheduled_at;
  std::optional<Clock::time_point> first_token_at;

  int32_t num_generated() const { return static_cast<int32_t>(tokens.size()) - prompt_len; }
  int32_t num_uncomputed() const { return static_cast<int32_t>(tokens.size()) - num_computed; }
};

}  // namespace loraserve::engine
