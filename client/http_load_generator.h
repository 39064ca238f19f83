// The HTTP side of `loractl bench --http`: sends every request of a trace at its arrival time to
// a server's OpenAI-compatible POST /v1/completions as a streaming request (token-id prompt,
// greedy, EOS ignored, `return_token_ids` so that every chunk says how many tokens it carries)
// without waiting for earlier ones (open loop), one client thread per request in flight, and
// measures time to first token and time per output token as run_load does for gRPC, so the two
// transports' figures compare one to one. run_http_load blocks.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "client/load_generator.h"
#include "client/trace.h"

namespace loraserve::client {

struct HttpLoadOptions {
  std::string address;     // host:port of the server's HTTP listener
  std::string api_key;     // sent as a Bearer token when not empty
  std::string base_model;  // the `model` of requests for the base model ("" leaves it out)
  double timeout_s = 0.0;  // per request; 0: none
};

// `progress` is called about every 200 ms while the trace runs, and once at the end.
LoadResult run_http_load(const HttpLoadOptions& options, const std::vector<TraceRequest>& trace,
                         const std::function<void(const LoadProgress&)>& progress);

}  // namespace loraserve::client
