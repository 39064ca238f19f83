// Entry points of the CUDA backend (kernels/cuda/), declared without CUDA headers so that
// kernels/backend.cpp, tests and benches compile with the plain C++ compiler.
// The backend keeps weights, activations, the KV cache and LoRA weights in one 16-bit dtype
// (BF16, or F16 for F16 checkpoints), runs GEMMs through cuBLASLt with f32 accumulation and the
// other ops as its own kernels, and replays repeated decode steps as CUDA graphs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "kernels/backend.h"

namespace loraserve::kernels {

struct CudaOptions {
  int device = 0;
  DType compute_dtype = DType::kBF16;  // BF16 or F16: weights, activations, KV cache, LoRA
  bool graphs = true;                  // capture decode steps seen twice as CUDA graphs
};

// GPUs visible to this process; 0 when there is no driver or no device.
int cuda_device_count();
// Why cuda_device_count() is 0, in words ("" when it is not).
std::string cuda_unavailable_reason();
Result<std::unique_ptr<Backend>> create_cuda_backend(const CudaOptions& options);

// What the graph machinery did so far (tests and benches read it; no effect on results).
struct CudaGraphStats {
  uint64_t captured = 0;          // graphs instantiated
  uint64_t replayed = 0;          // steps run by launching a stored graph
  uint64_t eager_steps = 0;       // steps whose ops were launched one by one
  uint64_t capture_failures = 0;  // captures that failed (those steps ran eagerly instead)
  uint64_t cached = 0;            // graphs held now
};
// REQUIRES: `backend` came from create_cuda_backend (else INVALID_ARGUMENT).
Result<CudaGraphStats> cuda_graph_stats(const Backend& backend);

// Fills `t` (any float dtype, any stride) with values uniform in [lo, hi) from a counter-based
// generator seeded with `seed`: random weights made on the device (benchmarks).
Status cuda_fill_uniform(Backend& backend, const Tensor& t, uint64_t seed, float lo, float hi);
// Read bandwidth in bytes/s: the best of `repeats` timed device-wide sums over `bytes` bytes.
Result<double> cuda_read_bandwidth(Backend& backend, size_t bytes, int repeats);
// Milliseconds the asynchronous upload `ticket` took on its stream, once upload_done(ticket).
Result<double> cuda_upload_milliseconds(Backend& backend, uint64_t ticket);

}  // namespace loraserve::kernels
