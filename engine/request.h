// What a caller asks of the engine (GenerationRequest) and what it hears back, step by step
// (SequenceUpdate). Plain structs: front ends (the offline command, the gRPC server, benches)
// convert their wire types to these at the edge.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "adapters/registry.h"
#include "common/status.h"
#include "kernels/backend.h"

namespace loraserve::engine {

struct SamplingParams {
  std::optional<int32_t> max_tokens;  // absent: the engine's default, capped by the context
  float temperature = 1.0f;           // 0: greedy
  float top_p = 1.0f;                 // in (0, 1]
  int32_t top_k = 0;                  // 0: off
  std::optional<uint64_t> seed;       // absent: a fresh random seed
  int32_t logprobs = 0;               // top alternatives reported per token (0..kMaxLogprobs)
  // False when nobody reads GeneratedToken::logprob (left 0 then): greedy rows skip the softmax
  // over the vocabulary.
  bool want_logprob = true;
  bool ignore_eos = false;
  // vLLM's penalties, applied to the logits the token is picked from (the reported logprobs
  // stay those of the raw logits), in this order: logit_bias, min_tokens' masks, repetition,
  // frequency and presence (kernels::LogitEdit).
  std::vector<std::pair<int32_t, float>> logit_bias;  // token id, bias in [-100, 100]
  // EOS and stop_token_ids cannot be picked until the output has this many tokens, and stop
  // strings are looked for once it has more (vLLM's rules).
  int32_t min_tokens = 0;
  // > 0; a token of the prompt or the output: x / p if its logit x > 0, else x * p.
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;  // [-2, 2]; minus this times the token's count in the output
  float presence_penalty = 0.0f;   // [-2, 2]; minus this once for every token in the output
  float min_p = 0.0f;              // [0, 1]; see kernels::SampleParams::min_p
  // vLLM's: only these tokens can be picked (before the edits above); empty: every token.
  std::vector<int32_t> allowed_token_ids;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;  // stop strings (need the tokenizer); not returned in text
  // vLLM's: the text keeps the stop string that ended it (up to its end) and the text of an
  // ending EOS or stop token id (none for a special token with skip_special_tokens), and that
  // token counts among the answer's tokens.
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;  // leave special tokens out of the text
};

inline constexpr int32_t kMaxLogprobs = 20;

enum class FinishReason { kNone, kLength, kEos, kStop, kCancelled, kDeadline, kError };
std::string_view finish_reason_name(FinishReason r);  // "length", "eos", "stop", "cancelled", ...

struct GeneratedToken {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::vector<kernels::TokenLogprob> top;  // only when SamplingParams::logprobs > 0
};

// Delivered on the engine thread after every step that touched the sequence, and once at the
// end (finished == true). Keep handlers short: they run inside the step loop.
struct SequenceUpdate {
  uint64_t sequence_id = 0;
  std::vector<GeneratedToken> new_tokens;
  std::string new_text;  // detokenized text of new_tokens, safe to concatenate (with a tokenizer)
  // How many of the generated tokens, from the first, the text delivered so far comes from:
  // those whose text has been delivered in full; at the end, every token the answer's text
  // comes from. Never the EOS or stop token id that ended the request, nor tokens wholly past
  // a stop string's cut (an OpenAI answer's logprobs cover exactly its text's tokens).
  int32_t answer_tokens = 0;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  Status error;  // set when finish_reason == kError
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  bool scheduled = false;  // the sequence reached a step (queue_ms is set)
  double queue_ms = 0.0;   // submit → first scheduled
  double ttft_ms = 0.0;    // submit → first token (0 until then)
  // Raw logits of each new token's step, only with GenerationRequest::return_logits (tests).
  std::vector<std::vector<float>> logits;
};

// A cancellation that comes this close to the request's deadline, or after it, is the deadline's
// doing (gRPC cancels a call whose deadline passed, on a clock of its own): the request ends as
// kDeadline.
inline constexpr std::chrono::milliseconds kDeadlineSlack{20};

struct GenerationRequest {
  std::string request_id;  // for logs; the engine does not require uniqueness
  std::string task_id;     // empty: the base model
  // The adapter version to run on when the caller already holds one for task_id (a server that
  // loads adapters on demand); else the engine takes the version served now.
  adapters::AdapterLease adapter;
  std::vector<int32_t> prompt_token_ids;
  SamplingParams params;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  bool return_logits = false;
  std::function<void(const SequenceUpdate&)> on_update;
};

}  // namespace loraserve::engine
