#include "kernels/cuda/cuda_graphs.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "kernels/cuda/cuda_check.h"

namespace loraserve::kernels::cuda {
namespace {

// Fewer ops than this is not a forward pass: not worth a graph.
constexpr size_t kMinGraphOps = 8;
// Fingerprints remembered while waiting for their second sighting.
constexpr size_t kMaxSeen = 1 << 14;

uint64_t mix(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

Fingerprint& Fingerprint::add(uint64_t v) {
  h_ = mix(h_ ^ (v + 0x9E3779B97F4A7C15ull + (h_ << 6) + (h_ >> 2)));
  return *this;
}

Fingerprint& Fingerprint::add(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return add(uint64_t{bits});
}

Fingerprint& Fingerprint::add(const Tensor& t) {
  return add(t.data).add(static_cast<uint64_t>(t.dtype)).add(t.rows).add(t.cols).add(t.stride);
}

StepRecorder::~StepRecorder() { clear_graphs(); }

void StepRecorder::begin(bool replayable, uint64_t salt) {
  ops_.clear();
  replayable_ = replayable && graphs_enabled_;
  hash_ = Fingerprint(salt).value();
}

void StepRecorder::record(const Fingerprint& f, LaunchFn launch) {
  hash_ = mix(hash_ ^ f.value());
  ops_.push_back(std::move(launch));
}

Status StepRecorder::run_eagerly(std::vector<LaunchFn>& ops) {
  ++stats_.eager_steps;
  for (LaunchFn& op : ops) LS_RETURN_IF_ERROR(op());
  return ok_status();
}

Status StepRecorder::flush() {
  if (ops_.empty()) return ok_status();
  std::vector<LaunchFn> ops = std::move(ops_);
  ops_.clear();
  const uint64_t key = mix(hash_ ^ ops.size());
  const bool replayable = replayable_;
  replayable_ = false;  // ops recorded after this flush belong to no step
  if (!replayable || ops.size() < kMinGraphOps || uncapturable_.contains(key))
    return run_eagerly(ops);
  if (auto it = graphs_.find(key); it != graphs_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    LS_CUDA_CHECK(cudaGraphLaunch(it->second.exec, stream_));
    ++stats_.replayed;
    return ok_status();
  }
  if (seen_.size() >= kMaxSeen) seen_.clear();
  if (++seen_[key] < 2) return run_eagerly(ops);
  seen_.erase(key);
  auto exec = capture(ops);
  if (!exec.ok()) {
    // Nothing of the step ran during the capture: run it eagerly, and keep this fingerprint
    // eager so that the step does not alternate between a failing capture and eager launches.
    ++stats_.capture_failures;
    if (uncapturable_.size() >= kMaxSeen) uncapturable_.clear();
    uncapturable_.insert(key);
    spdlog::warn(
        "cuda graphs: a decode step could not be captured ({}); steps of this shape "
        "run eagerly",
        exec.status().to_string());
    return run_eagerly(ops);
  }
  return store_and_launch(*exec, key);
}

Result<cudaGraphExec_t> StepRecorder::capture(std::vector<LaunchFn>& ops) {
  LS_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  Status st;
  for (LaunchFn& op : ops) {
    st = op();
    if (!st.ok()) break;
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
  if (!st.ok()) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();  // the capture's own error, if any, goes with the op's
    return st.with_context("while capturing a CUDA graph");
  }
  LS_RETURN_IF_ERROR(cuda_error(end, "cudaStreamEndCapture"));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  LS_RETURN_IF_ERROR(cuda_error(inst, "cudaGraphInstantiate"));
  return exec;
}

Status StepRecorder::store_and_launch(cudaGraphExec_t exec, uint64_t key) {
  if (graphs_.size() >= max_graphs_ && !lru_.empty()) {
    LS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the victim may still be running
    const uint64_t victim = lru_.back();
    lru_.pop_back();
    cudaGraphExecDestroy(graphs_[victim].exec);
    graphs_.erase(victim);
  }
  lru_.push_front(key);
  graphs_[key] = Entry{exec, lru_.begin()};
  ++stats_.captured;
  LS_CUDA_CHECK(cudaGraphLaunch(exec, stream_));
  ++stats_.replayed;
  return ok_status();
}

void StepRecorder::clear_graphs() {
  if (!graphs_.empty()) cudaStreamSynchronize(stream_);  // a graph may still be running
  for (auto& [key, e] : graphs_) cudaGraphExecDestroy(e.exec);
  graphs_.clear();
  lru_.clear();
  seen_.clear();
  uncapturable_.clear();
}

CudaGraphStats StepRecorder::stats() const {
  CudaGraphStats s = stats_;
  s.cached = graphs_.size();
  return s;
}

}  // namespace loraserve::kernels::cuda
