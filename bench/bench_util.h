// Small helpers shared by the benchmark programs: synthetic model presets, timing, statistics,
// and a memory-bandwidth probe. Benchmarks print figures; they never assert on time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"
#include "formats/hf_config.h"

namespace loraserve::bench {

// Llama-shaped configs: "small" (dim 1024, 8 layers) and "8b-layers" (Llama-3-8B layer shapes,
// 2 layers, vocab 32000), untied embeddings, F32 checkpoint dtype.
Result<formats::ModelConfig> preset_config(const std::string& name);

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Summary {
  double median = 0, min = 0, max = 0;
};
inline Summary summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return s;
}

// What a decode step reads of the weights: all of them (`weight_bytes`, matrices stored in
// `weight_dtype`) but the embedding table, of which it reads only the batch's rows.
double decode_step_weight_bytes(double weight_bytes, const formats::ModelConfig& c,
                                DType weight_dtype);

// Shows "run i/n" on stderr while interleaved runs go on; run == n clears it at the end.
void show_run_progress(int run, int runs);

// Read bandwidth in bytes/s: best of `repeats` timed sums over a `bytes` float array, on all
// OpenMP threads.
double measure_read_bandwidth(size_t bytes, int repeats);

}  // namespace loraserve::bench
