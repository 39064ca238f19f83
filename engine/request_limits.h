// RequestLimits: what a client may put in one request, beyond what the model itself allows: the
// prompt's length, stop strings and stop ids, the logprobs K, the task and request IDs. Set by
// flags with safe defaults (cli/common_flags.cpp), the same for every front end: the engine
// applies them first when a request is submitted (admission.h), and front ends run the cheap
// checks again before they tokenize a prompt. Each refusal is INVALID_ARGUMENT with a short
// message that names the field and the flag, and never echoes the value it refuses. The
// transport's own limits (message size, calls open at once) are the server's (ServeOptions).
// Plain value type; the checks are const and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "adapters/registry.h"
#include "common/status.h"
#include "engine/request.h"

namespace loraserve::engine {

struct RequestLimits {
  int32_t max_prompt_tokens = 0;        // 0: whatever the model's context holds
  int32_t max_stop_strings = 16;        // entries of `stop`
  int32_t max_stop_bytes = 256;         // bytes of one stop string
  int32_t max_stop_token_ids = 64;      // entries of `stop_token_ids`
  int32_t max_logprobs = kMaxLogprobs;  // the K of `logprobs`
  int32_t max_task_id_length = adapters::AdapterRegistry::kMaxTaskIdLength;
  int32_t max_request_id_bytes = 256;  // bytes of a client's request ID

  // INVALID_ARGUMENT naming the flag when a limit is out of its range (e.g. --max-logprobs
  // above the engine's 20).
  Status validate() const;

  // A task ID: at most max_task_id_length characters (checked first, without reading the rest),
  // then the registry's syntax ([A-Za-z0-9._:-], 1 or more). `field` names it in the message.
  Status check_task_id(std::string_view task_id, std::string_view field = "task_id") const;
  // A client's request ID: at most max_request_id_bytes bytes, no control characters (it is
  // written into the request log). Empty is fine (front ends make one up).
  Status check_request_id(std::string_view request_id) const;
  // What a request brings besides its prompt, task ID first (empty: the base model), then the
  // request ID, stop strings, stop token ids and logprobs. Cheap: front ends run it before
  // tokenizing.
  Status check_request(const GenerationRequest& request) const;
  // A text prompt before it is tokenized: an empty prompt is refused (it would be BOS alone).
  Status check_prompt_text(std::string_view text) const;
  // The prompt's length in tokens, against max_prompt_tokens when set.
  Status check_prompt_tokens(size_t tokens) const;
};

}  // namespace loraserve::engine
