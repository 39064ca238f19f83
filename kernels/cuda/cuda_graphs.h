// Runs the ops of a step: records each op's launch as a closure, then at flush launches them one
// by one, or, for a replayable step (a decode step), as a CUDA graph: captured the second time a
// step with the same fingerprint (every value the launches bake in) is flushed, and replayed
// from then on. Graphs are kept in an LRU cache of bounded size. Not thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <list>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace loraserve::kernels::cuda {

// A 64-bit hash of the values a launch depends on.
class Fingerprint {
 public:
  explicit Fingerprint(uint64_t op) { add(op); }
  Fingerprint& add(uint64_t v);
  Fingerprint& add(int64_t v) { return add(static_cast<uint64_t>(v)); }
  Fingerprint& add(int32_t v) { return add(static_cast<uint64_t>(static_cast<uint32_t>(v))); }
  Fingerprint& add(bool v) { return add(uint64_t{v}); }
  Fingerprint& add(float v);
  Fingerprint& add(const void* p) {
    return add(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)));
  }
  Fingerprint& add(const Tensor& t);
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0x243F6A8885A308D3ull;
};

class StepRecorder {
 public:
  using LaunchFn = std::function<Status()>;

  StepRecorder(cudaStream_t stream, bool graphs_enabled, size_t max_graphs)
      : stream_(stream), graphs_enabled_(graphs_enabled), max_graphs_(max_graphs) {}
  ~StepRecorder();
  StepRecorder(const StepRecorder&) = delete;
  StepRecorder& operator=(const StepRecorder&) = delete;

  // Starts recording a step. REQUIRES: nothing pending (flush first). `salt` enters the step's
  // fingerprint (the device metadata's address).
  void begin(bool replayable, uint64_t salt);
  void record(const Fingerprint& f, LaunchFn launch);
  bool pending() const { return !ops_.empty(); }
  // Launches what was recorded. A step whose graph cannot be captured or instantiated runs
  // eagerly instead (and so does every later step of the same fingerprint); errors of an eager
  // launch are returned, and the rest of the step is dropped.
  Status flush();
  // Drops every stored graph (the buffers they baked in moved).
  void clear_graphs();
  CudaGraphStats stats() const;

 private:
  struct Entry {
    cudaGraphExec_t exec = nullptr;
    std::list<uint64_t>::iterator lru;
  };
  Status run_eagerly(std::vector<LaunchFn>& ops);
  // Captures `ops` into an executable graph; any failure (an op refused during capture, the
  // capture invalidated, instantiation) is returned, and nothing has run.
  Result<cudaGraphExec_t> capture(std::vector<LaunchFn>& ops);
  Status store_and_launch(cudaGraphExec_t exec, uint64_t key);

  cudaStream_t stream_;
  bool graphs_enabled_;
  size_t max_graphs_;
  std::vector<LaunchFn> ops_;
  uint64_t hash_ = 0;
  bool replayable_ = false;
  std::unordered_map<uint64_t, Entry> graphs_;
  std::list<uint64_t> lru_;  // most recently used first
  std::unordered_map<uint64_t, uint32_t> seen_;
  std::unordered_set<uint64_t> uncapturable_;  // fingerprints whose capture failed: always eager
  CudaGraphStats stats_;
};

}  // namespace loraserve::kernels::cuda
