// RequestLimits: the bounds every front end (the gRPC services, the HTTP server, `loraserve
// generate`) holds a request to before it reaches the engine, set by flags with safe defaults.
// Each check refuses with INVALID_ARGUMENT (RESOURCE_EXHAUSTED for the transport limits, which
// the front end applies) and a short message that names the field and the flag, and never echoes
// the value it refuses. The engine still checks what depends on the model (vocabulary, context,
// KV cache). Plain value type; the checks are const and thread-safe.
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "adapters/registry.h"
#include "common/status.h"
#include "engine/request.h"

namespace loraserve::server {

struct RequestLimits {
  // Transport: applied by the server that receives the bytes.
  int32_t max_request_bytes = 4 << 20;    // one request message or body (gRPC's own default)
  int32_t max_concurrent_streams = 1024;  // inference calls open at once, over all connections
  // Content: checked by check_request() and check_prompt_tokens().
  int32_t max_prompt_tokens = 0;                   // 0: whatever the model's context holds
  int32_t max_stop_strings = 16;                   // entries of `stop`
  int32_t max_stop_bytes = 256;                    // bytes of one stop string
  int32_t max_stop_token_ids = 64;                 // entries of `stop_token_ids`
  int32_t max_logprobs = engine::kMaxLogprobs;     // the K of `logprobs`
  int32_t max_task_id_length = adapters::AdapterRegistry::kMaxTaskIdLength;  // of a task ID
  int32_t max_request_id_bytes = 256;              // bytes of a client's request ID

  // INVALID_ARGUMENT naming the flag when a limit is out of its range (e.g. --max-logprobs
  // above the engine's 20).
  Status validate() const;

  // A task ID: at most max_task_id_length characters (checked first, without reading the rest),
  // then the registry's syntax ([A-Za-z0-9._:-], 1 or more). `field` names it in the message.
  Status check_task_id(std::string_view task_id, std::string_view field = "task_id") const;
  // A client's request ID: at most max_request_id_bytes bytes, no control characters (it is
  // written into the request log). Empty is fine (the server makes one up).
  Status check_request_id(std::string_view request_id) const;
  // What a request brings besides its prompt, task ID first (empty: the base model), then the
  // request ID, stop strings, stop token ids and logprobs. Cheap: run it before tokenizing.
  Status check_request(const engine::GenerationRequest& request) const;
  // A text prompt before it is tokenized: an empty prompt is refused (it would be BOS alone).
  Status check_prompt_text(std::string_view text) const;
  // The prompt's length in tokens, against max_prompt_tokens when set.
  Status check_prompt_tokens(size_t tokens) const;
};

// Adds the content limits' flags (--max-prompt-tokens, --max-stop-strings, --max-stop-bytes,
// --max-stop-token-ids, --max-logprobs, --max-task-id-length, --max-request-id-bytes) and, with
// `transport`, --max-request-bytes and --max-concurrent-streams.
void add_request_limit_flags(CLI::App* cmd, RequestLimits* limits, bool transport);

}  // namespace loraserve::server
