// The load generator behind `loractl bench`: sends every request of a trace at its arrival time
// as a GenerateStream call (greedy, EOS ignored, so each generates exactly max_tokens) without
// waiting for earlier ones (open loop), and measures each request's time to first token and
// time per output token on the client. Runs on gRPC's callback threads; run_load blocks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "client/client.h"
#include "client/trace.h"

namespace loraserve::client {

struct LoadProgress {
  int32_t sent = 0;
  int32_t finished = 0;
  int32_t total = 0;
  uint64_t tokens = 0;
  double elapsed_s = 0.0;
};

struct Percentiles {
  double p50 = 0.0;
  double p90 = 0.0;
  double p99 = 0.0;
};

struct LoadResult {
  int32_t requests = 0;
  int32_t succeeded = 0;
  std::map<std::string, int32_t> errors;  // "CODE: message" → count
  double duration_s = 0.0;                // first send → last completion
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  double requests_per_s = 0.0;
  double tokens_per_s = 0.0;  // completion tokens
  Percentiles ttft_ms;
  Percentiles tpot_ms;  // (last token - first token) / (tokens - 1), per request
};

// `progress` is called about every 200 ms while the trace runs, and once at the end.
LoadResult run_load(const Client& client, const std::vector<TraceRequest>& trace,
                    const std::function<void(const LoadProgress&)>& progress);

// What a load generator records of one request, as its tokens arrive.
struct RequestRecord {
  std::chrono::steady_clock::time_point sent;
  std::chrono::steady_clock::time_point first_token;
  std::chrono::steady_clock::time_point last_token;
  uint32_t tokens = 0;
  uint32_t prompt_tokens = 0;
  Status status;
};

// Counts finished requests and streamed tokens while a trace runs. Thread-safe.
class LoadTracker {
 public:
  void add_tokens(uint32_t n);
  void finish_one();
  // Waits up to `wait` for a request to finish; the counts so far.
  void wait(std::chrono::milliseconds wait, int32_t* finished, uint64_t* tokens);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int32_t finished_ = 0;
  uint64_t tokens_ = 0;
};

// The open loop both transports share: calls send(i) at request i's arrival time (send must not
// block; the request records itself in records[i] and calls tracker.finish_one() at its end),
// reports progress, waits for every request, and summarizes the records.
LoadResult drive_trace(const std::vector<TraceRequest>& trace, std::vector<RequestRecord>& records,
                       LoadTracker& tracker, const std::function<void(size_t)>& send,
                       const std::function<void(const LoadProgress&)>& progress);

}  // namespace loraserve::client
