// A benchmark trace, S-LoRA's method: open-loop Poisson arrivals at a set rate, tasks drawn with
// Zipf-distributed popularity, prompt and output lengths drawn uniformly from ranges, all from
// one seed. `loractl bench` sends it to a server; bench/server_bench replays it in-process. The
// random streams use only std::mt19937_64's raw output (fully specified by the standard), so a
// seed gives the same trace in every build. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace loraserve::client {

struct TraceOptions {
  int32_t requests = 256;
  double rate = 0.0;               // requests per second; 0: all at once (saturation)
  std::vector<std::string> tasks;  // the most popular first; "" is the base model
  double zipf = 1.0;               // task i (from 0) is drawn with weight 1 / (i + 1)^zipf
  int32_t prompt_min = 16;
  int32_t prompt_max = 64;
  int32_t output_min = 16;
  int32_t output_max = 64;
  int32_t vocab_size = 0;      // prompt ids are drawn from [first_token_id, vocab_size)
  int32_t first_token_id = 3;  // skips the ids special tokens usually have
  uint64_t seed = 1;
};

struct TraceRequest {
  double arrival_s = 0.0;  // from the start of the run
  std::string task_id;
  std::vector<int32_t> prompt;
  int32_t max_tokens = 0;  // generated exactly (the trace's requests ignore EOS)
};

// Errors name the option at fault (an empty range, no tasks, a vocabulary too small).
Result<std::vector<TraceRequest>> make_trace(const TraceOptions& options);

// One tenant of a multi-tenant trace (`loractl bench --tenants`): a task with its own rate.
struct Tenant {
  std::string task_id;  // "" is the base model
  double rate = 0.0;    // requests per second; 0: all at once
  int32_t requests = 0;
};

// "TASK=RATE" or "TASK=RATE:REQUESTS" (REQUESTS defaults to `default_requests`); an empty TASK
// is the base model. INVALID_ARGUMENT naming --tenants otherwise.
Result<Tenant> parse_tenant(const std::string& spec, int32_t default_requests);

// Each tenant's own Poisson arrivals at its rate, merged in time order; prompt and output
// lengths, the vocabulary and the seed come from `options` (its requests, rate, tasks and zipf
// are not used).
Result<std::vector<TraceRequest>> make_tenant_trace(const TraceOptions& options,
                                                    const std::vector<Tenant>& tenants);

// Parses "A:B" (or "A") into a range of lengths >= 1.
Status parse_range(const std::string& text, const std::string& name, int32_t* lo, int32_t* hi);

// Nearest-rank percentile (p in [0, 100]) of `values`; 0 when empty.
double percentile(std::vector<double> values, double p);

}  // namespace loraserve::client
