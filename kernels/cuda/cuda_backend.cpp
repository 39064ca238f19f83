// The CUDA backend (see cuda_backend.h): the device, memory and copies, sampling, and the
// CUDA-only entry points. The step and the ops are in cuda_ops.cpp.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace loraserve::kernels {
namespace cuda {
namespace {

constexpr size_t kGemmWorkspaceBytes = 32 << 20;
constexpr size_t kStagingBytes = 64 << 20;  // host data is converted in chunks of this
constexpr size_t kMaxGraphs = 64;
constexpr size_t kMaxUploadsKept = 256;

}  // namespace

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (upload_stream_ != nullptr) cudaStreamSynchronize(upload_stream_);
  recorder_.reset();
  gemm_.reset();
  for (DeviceScratch* s :
       {&attention_scratch_, &staging_, &sample_scratch_, &sample_params_, &sample_out_}) {
    if (s->data != nullptr) cudaFree(s->data);
  }
  for (PinnedScratch* s : {&sample_params_host_, &sample_out_host_}) {
    if (s->data != nullptr) cudaFreeHost(s->data);
  }
  for (auto& [ticket, u] : uploads_) {
    cudaEventDestroy(u.start);
    cudaEventDestroy(u.end);
  }
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  if (upload_stream_ != nullptr) cudaStreamDestroy(upload_stream_);
}

Status CudaBackend::init() {
  if (dtype_ != DType::kBF16 && dtype_ != DType::kF16) {
    return invalid_argument_error("cuda backend computes in BF16 or F16, not {}",
                                  dtype_name(dtype_));
  }
  LS_RETURN_IF_ERROR(set_device());
  cudaDeviceProp prop = {};
  LS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  name_ = prop.name;
  cc_major_ = prop.major;
  cc_minor_ = prop.minor;
  sm_count_ = std::max(1, prop.multiProcessorCount);
  total_memory_ = prop.totalGlobalMem;
  if (cc_major_ < 8) {
    return failed_precondition_error(
        "cuda:{} {} has compute capability {}.{}; the CUDA backend needs 8.0 or newer (BF16)",
        device_, name_, cc_major_, cc_minor_);
  }
  LS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  LS_CUDA_CHECK(cudaStreamCreateWithFlags(&upload_stream_, cudaStreamNonBlocking));
  LS_ASSIGN_OR_RETURN(gemm_, cuda::Gemm::create(kGemmWorkspaceBytes));
  recorder_ = std::make_unique<cuda::StepRecorder>(stream_, graphs_, kMaxGraphs);
  LS_RETURN_IF_ERROR(launch_error(cuda::prepare_kernels(), "prepare_kernels"));
  spdlog::info("cuda backend: {}", describe());
  return ok_status();
}

Status CudaBackend::check_tensor(const Tensor& t, DType want, const char* op,
                                 const char* name) const {
  if (t.dtype != want) {
    return invalid_argument_error("cuda backend: {}: {} has dtype {}, expected {}", op, name,
                                  dtype_name(t.dtype), dtype_name(want));
  }
  if (t.rows < 0 || t.cols < 0 || t.stride < t.cols) {
    return invalid_argument_error("cuda backend: {}: {} has shape {}x{} with row stride {}", op,
                                  name, t.rows, t.cols, t.stride);
  }
  if (t.data == nullptr && t.rows > 0 && t.cols > 0)
    return invalid_argument_error("cuda backend: {}: {} has no memory", op, name);
  return ok_status();
}

Status CudaBackend::ensure(DeviceScratch& s, size_t bytes) {
  if (bytes <= s.bytes) return ok_status();
  LS_RETURN_IF_ERROR(prepare());
  const size_t want = std::max(bytes, s.bytes * 2);
  if (s.data != nullptr) {
    LS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // launched kernels may still read it
    LS_CUDA_CHECK(cudaFree(s.data));
    s.data = nullptr;
    s.bytes = 0;
  }
  LS_CUDA_CHECK(cudaMalloc(&s.data, want));
  s.bytes = want;
  return ok_status();
}

Status CudaBackend::ensure_pinned(PinnedScratch& s, size_t bytes) {
  if (bytes <= s.bytes) return ok_status();
  LS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the last copy into it has landed
  if (s.data != nullptr) {
    LS_CUDA_CHECK(cudaFreeHost(s.data));
    s.data = nullptr;
    s.bytes = 0;
  }
  LS_CUDA_CHECK(cudaHostAlloc(&s.data, bytes, cudaHostAllocDefault));
  s.bytes = bytes;
  return ok_status();
}

// --- memory

Result<DeviceBuffer> CudaBackend::allocate(size_t bytes) {
  LS_RETURN_IF_ERROR(set_device());
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  if (e != cudaSuccess) {
    cudaGetLastError();
    return resource_exhausted_error("cuda:{}: cannot allocate {:.1f} MiB ({:.1f} MiB free): {}",
                                    device_, static_cast<double>(bytes) / (1 << 20),
                                    static_cast<double>(available_memory()) / (1 << 20),
                                    cudaGetErrorString(e));
  }
  allocations_[static_cast<const char*>(p)] = std::max<size_t>(bytes, 1);
  return DeviceBuffer(this, p, bytes);
}

void CudaBackend::free(void* data) {
  // Recorded ops and running kernels may still use the memory: launch them and wait for the
  // compute stream. Of the uploads in flight, only those writing into this buffer are waited
  // for (freeing one adapter slot must not wait for the uploads of the others).
  Status st = prepare();
  if (st.ok()) st = cuda_error(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  const char* begin = static_cast<const char*>(data);
  const auto alloc = allocations_.find(begin);
  const size_t bytes = alloc != allocations_.end() ? alloc->second : 0;
  for (const auto& [ticket, u] : uploads_) {
    if (!st.ok()) break;
    const bool overlaps = alloc == allocations_.end()
                              ? true  // unknown size: wait for every upload
                              : u.dst < begin + bytes && begin < u.dst + u.bytes;
    if (overlaps) st = cuda_error(cudaEventSynchronize(u.end), "cudaEventSynchronize");
  }
  if (!st.ok()) {
    // Waiting failed (the device is in error): wait for everything before freeing.
    spdlog::error("cuda backend: before freeing a buffer: {}", st.to_string());
    (void)cudaDeviceSynchronize();
  }
  if (alloc != allocations_.end()) allocations_.erase(alloc);
  const cudaError_t e = cudaFree(data);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    spdlog::error("cuda backend: cudaFree: {}", cudaGetErrorString(e));
  }
}

Result<DeviceBuffer> CudaBackend::allocate_host(size_t bytes) {
  LS_RETURN_IF_ERROR(set_device());
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, std::max<size_t>(bytes, 1), cudaHostAllocDefault);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return resource_exhausted_error("cuda:{}: cannot pin {:.1f} MiB of host memory: {}", device_,
                                    static_cast<double>(bytes) / (1 << 20), cudaGetErrorString(e));
  }
  return DeviceBuffer(this, p, bytes, /*host=*/true);
}

void CudaBackend::free_host(void* data) {
  const cudaError_t e = cudaFreeHost(data);
  if (e != cudaSuccess) spdlog::error("cuda backend: cudaFreeHost: {}", cudaGetErrorString(e));
}

Status CudaBackend::copy_to_device(const Tensor& dst, const void* src, DType src_dtype, size_t n) {
  if (!dst.contiguous() || dst.rows < 0 || static_cast<size_t>(dst.rows * dst.cols) != n) {
    return invalid_argument_error(
        "cuda backend: copy_to_device of {} elements into a {}x{} view "
        "(stride {})",
        n, dst.rows, dst.cols, dst.stride);
  }
  if (n == 0) return ok_status();
  if (dst.data == nullptr || src == nullptr)
    return invalid_argument_error("cuda backend: copy_to_device with a null pointer");
  if ((src_dtype == DType::kI32) != (dst.dtype == DType::kI32)) {
    return invalid_argument_error("cuda backend: copy_to_device cannot convert {} to {}",
                                  dtype_name(src_dtype), dtype_name(dst.dtype));
  }
  LS_RETURN_IF_ERROR(prepare());  // pending ops may read or write dst
  const size_t src_size = dtype_size(src_dtype), dst_size = dtype_size(dst.dtype);
  if (src_dtype == dst.dtype) {
    // cudaMemcpyDefault: `src` may be host memory or (benchmarks) device memory.
    LS_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, n * src_size, cudaMemcpyDefault, stream_));
  } else {
    LS_RETURN_IF_ERROR(ensure(staging_, kStagingBytes));
    const size_t chunk = kStagingBytes / src_size;
    for (size_t done = 0; done < n; done += chunk) {
      const size_t c = std::min(chunk, n - done);
      LS_CUDA_CHECK(cudaMemcpyAsync(staging_.data, static_cast<const char*>(src) + done * src_size,
                                    c * src_size, cudaMemcpyDefault, stream_));
      LS_RETURN_IF_ERROR(
          launch_error(cuda::convert(staging_.data, src_dtype, static_cast<int64_t>(c),
                                     static_cast<char*>(dst.data) + done * dst_size, dst.dtype,
                                     static_cast<int64_t>(c), 1, static_cast<int64_t>(c), stream_),
                       "copy_to_device conversion"));
    }
  }
  return cuda_error(cudaStreamSynchronize(stream_), "copy_to_device");
}

Result<uint64_t> CudaBackend::copy_to_device_async(const Tensor& dst, const void* src,
                                                   DType src_dtype, size_t n) {
  if (src_dtype != dst.dtype) {
    return invalid_argument_error("cuda backend: copy_to_device_async does not convert ({} to {})",
                                  dtype_name(src_dtype), dtype_name(dst.dtype));
  }
  if (!dst.contiguous() || dst.rows < 0 || static_cast<size_t>(dst.rows * dst.cols) != n) {
    return invalid_argument_error(
        "cuda backend: copy_to_device_async of {} elements into a {}x{} view", n, dst.rows,
        dst.cols);
  }
  if (dst.data == nullptr || src == nullptr)
    return invalid_argument_error("cuda backend: copy_to_device_async with a null pointer");
  LS_RETURN_IF_ERROR(set_device());
  cudaPointerAttributes attr = {};
  LS_CUDA_CHECK(cudaPointerGetAttributes(&attr, src));
  if (attr.type == cudaMemoryTypeUnregistered) {
    return invalid_argument_error(
        "cuda backend: copy_to_device_async needs a source in pinned memory (allocate_host); "
        "pageable memory would make the copy synchronous");
  }
  Upload u;
  u.dst = static_cast<const char*>(dst.data);
  u.bytes = n * dtype_size(src_dtype);
  LS_CUDA_CHECK(cudaEventCreate(&u.start));
  if (const cudaError_t e = cudaEventCreate(&u.end); e != cudaSuccess) {
    cudaEventDestroy(u.start);
    return cuda_error(e, "cudaEventCreate");
  }
  uploads_[++next_ticket_] = u;  // from here the destructor owns the events
  LS_CUDA_CHECK(cudaEventRecord(u.start, upload_stream_));
  LS_CUDA_CHECK(
      cudaMemcpyAsync(dst.data, src, n * dtype_size(src_dtype), cudaMemcpyDefault, upload_stream_));
  LS_CUDA_CHECK(cudaEventRecord(u.end, upload_stream_));
  const uint64_t ticket = next_ticket_;
  for (auto it = uploads_.begin(); uploads_.size() > kMaxUploadsKept && it != uploads_.end();) {
    if (cudaEventQuery(it->second.end) != cudaSuccess) break;  // keep order: oldest first
    cudaEventDestroy(it->second.start);
    cudaEventDestroy(it->second.end);
    it = uploads_.erase(it);
  }
  cudaGetLastError();  // a cudaErrorNotReady from the queries above is no error
  return ticket;
}

Result<bool> CudaBackend::upload_done(uint64_t ticket) {
  auto it = uploads_.find(ticket);
  // Retired uploads had finished (only finished ones are retired); an unknown ticket was never
  // issued by this backend.
  if (it == uploads_.end()) {
    if (ticket == 0 || ticket > next_ticket_)
      return invalid_argument_error("cuda backend: upload ticket {} was never issued", ticket);
    return true;
  }
  LS_RETURN_IF_ERROR(set_device());
  const cudaError_t e = cudaEventQuery(it->second.end);
  if (e == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  LS_RETURN_IF_ERROR(cuda_error(e, fmt::format("asynchronous upload {}", ticket)));
  return true;
}

Status CudaBackend::copy_to_host(const Tensor& src, float* dst) {
  if (src.dtype == DType::kI32)
    return invalid_argument_error("cuda backend: copy_to_host reads float tensors, not I32");
  if (src.rows < 0 || src.cols < 0 || src.stride < src.cols)
    return invalid_argument_error("cuda backend: copy_to_host of a {}x{} view", src.rows, src.cols);
  const int64_t n = src.rows * src.cols;
  if (n == 0) return ok_status();
  if (src.data == nullptr || dst == nullptr)
    return invalid_argument_error("cuda backend: copy_to_host with a null pointer");
  LS_RETURN_IF_ERROR(prepare());
  const void* from = src.data;
  if (src.dtype != DType::kF32 || !src.contiguous()) {
    LS_RETURN_IF_ERROR(ensure(staging_, static_cast<size_t>(n) * sizeof(float)));
    LS_RETURN_IF_ERROR(
        launch_error(cuda::convert(src.data, src.dtype, src.stride, staging_.data, DType::kF32,
                                   src.cols, src.rows, src.cols, stream_),
                     "copy_to_host conversion"));
    from = staging_.data;
  }
  LS_CUDA_CHECK(cudaMemcpyAsync(dst, from, static_cast<size_t>(n) * sizeof(float),
                                cudaMemcpyDeviceToHost, stream_));
  return cuda_error(cudaStreamSynchronize(stream_), "copy_to_host");
}

Status CudaBackend::sample(const Tensor& logits, std::span<const SampleParams> params,
                           std::vector<SampleResult>* results) {
  if (static_cast<int64_t>(params.size()) != logits.rows) {
    return invalid_argument_error("cuda backend: {} sampling params for {} rows", params.size(),
                                  logits.rows);
  }
  LS_RETURN_IF_ERROR(
      check_tensor(logits, logits.dtype == DType::kF32 ? DType::kF32 : dtype_, "sample", "logits"));
  results->resize(params.size());
  const int64_t rows = logits.rows, vocab = logits.cols;
  if (rows == 0) return ok_status();
  if (vocab == 0) return invalid_argument_error("cuda backend: sample over an empty vocabulary");
  LS_RETURN_IF_ERROR(check_sample_params(params, vocab));
  LS_RETURN_IF_ERROR(prepare());
  std::vector<cuda::DeviceSampleParams> dev(params.size());
  int64_t sorted = 0;
  int32_t max_logprobs = 0;
  for (size_t r = 0; r < params.size(); ++r) {
    const SampleParams& p = params[r];
    const int32_t num_logprobs =
        static_cast<int32_t>(std::clamp<int64_t>(p.num_logprobs, 0, vocab));
    // The CPU sampler's rule: top-k / top-p (NaN top_p is "off", as `< 1` is false for it).
    const bool filtered = p.temperature > 0.0f && (p.top_k > 0 || p.top_p < 1.0f);
    const bool ordered = filtered || num_logprobs > 0;
    dev[r] = cuda::DeviceSampleParams{p.temperature,
                                      p.top_k,
                                      p.top_p,
                                      p.uniform,
                                      num_logprobs,
                                      filtered ? 1 : 0,
                                      ordered ? static_cast<int32_t>(sorted++) : -1};
    max_logprobs = std::max(max_logprobs, num_logprobs);
  }
  const size_t params_bytes = dev.size() * sizeof(cuda::DeviceSampleParams);
  const size_t result_bytes = static_cast<size_t>(rows) * sizeof(cuda::DeviceSampleResult);
  const size_t top_bytes = static_cast<size_t>(rows * max_logprobs) * 4;
  const size_t out_bytes = result_bytes + 2 * top_bytes;
  const size_t scratch_bytes = cuda::sample_scratch_bytes(rows, sorted, vocab);
  if (scratch_bytes == 0)
    return internal_error("cuda backend: sample: cannot size the sort's scratch");
  LS_RETURN_IF_ERROR(ensure(sample_params_, params_bytes));
  LS_RETURN_IF_ERROR(ensure(sample_out_, out_bytes));
  LS_RETURN_IF_ERROR(ensure(sample_scratch_, scratch_bytes));
  LS_RETURN_IF_ERROR(ensure_pinned(sample_params_host_, params_bytes));
  LS_RETURN_IF_ERROR(ensure_pinned(sample_out_host_, out_bytes));
  std::memcpy(sample_params_host_.data, dev.data(), params_bytes);
  LS_CUDA_CHECK(cudaMemcpyAsync(sample_params_.data, sample_params_host_.data, params_bytes,
                                cudaMemcpyHostToDevice, stream_));
  char* out = static_cast<char*>(sample_out_.data);
  auto* dev_results = reinterpret_cast<cuda::DeviceSampleResult*>(out);
  auto* top_ids = reinterpret_cast<int32_t*>(out + result_bytes);
  auto* top_logprobs = reinterpret_cast<float*>(out + result_bytes + top_bytes);
  LS_RETURN_IF_ERROR(launch_error(
      cuda::sample_rows(logits.dtype, logits.data, logits.stride, rows, vocab,
                        static_cast<const cuda::DeviceSampleParams*>(sample_params_.data), sorted,
                        max_logprobs, sample_scratch_.data, sample_scratch_.bytes, dev_results,
                        top_ids, top_logprobs, stream_),
      "sample"));
  LS_CUDA_CHECK(
      cudaMemcpyAsync(sample_out_host_.data, out, out_bytes, cudaMemcpyDeviceToHost, stream_));
  LS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const char* host = static_cast<const char*>(sample_out_host_.data);
  const auto* res = reinterpret_cast<const cuda::DeviceSampleResult*>(host);
  const auto* ids = reinterpret_cast<const int32_t*>(host + result_bytes);
  const auto* lps = reinterpret_cast<const float*>(host + result_bytes + top_bytes);
  for (size_t r = 0; r < params.size(); ++r) {
    SampleResult& out_r = (*results)[r];
    out_r.token_id = res[r].token_id;
    out_r.logprob = res[r].logprob;
    out_r.top.clear();
    for (int32_t j = 0; j < dev[r].num_logprobs; ++j) {
      const size_t at = r * static_cast<size_t>(max_logprobs) + static_cast<size_t>(j);
      out_r.top.push_back(TokenLogprob{ids[at], lps[at]});
    }
  }
  // Rows with logit edits (penalties, logit_bias, min_tokens), allowed tokens or min_p are
  // picked on the host, by the CPU sampler, from their row copied back: a few hundred KiB per
  // row and the same semantics on both backends, for what few requests ask. The device's pick
  // for them is unused.
  for (size_t r = 0; r < params.size(); ++r) {
    if (params[r].edits.empty() && params[r].allowed.empty() && !(params[r].min_p > 0.0f)) continue;
    host_row_.resize(static_cast<size_t>(vocab));
    LS_RETURN_IF_ERROR(
        copy_to_host(logits.row_slice(static_cast<int64_t>(r), 1), host_row_.data()));
    cpu::sample_row(host_row_.data(), vocab, params[r], &(*results)[r]);
  }
  return ok_status();
}

// --- CUDA-only entry points

Status CudaBackend::fill_uniform(const Tensor& t, uint64_t seed, float lo, float hi) {
  if (t.dtype == DType::kI32 || t.rows < 0 || t.cols < 0 || t.stride < t.cols)
    return invalid_argument_error("cuda_fill_uniform: a float tensor is needed");
  LS_RETURN_IF_ERROR(prepare());
  LS_RETURN_IF_ERROR(launch_error(
      cuda::fill_uniform(t.data, t.dtype, t.rows, t.cols, t.stride, seed, lo, hi, stream_),
      "fill_uniform"));
  return cuda_error(cudaStreamSynchronize(stream_), "fill_uniform");
}

Result<double> CudaBackend::read_bandwidth(size_t bytes, int repeats) {
  const int64_t n = static_cast<int64_t>(bytes / 16 * 4);
  if (n <= 0 || repeats <= 0)
    return invalid_argument_error("cuda_read_bandwidth of {} bytes, {} repeats", bytes, repeats);
  LS_ASSIGN_OR_RETURN(DeviceBuffer data, allocate(static_cast<size_t>(n) * sizeof(float)));
  LS_ASSIGN_OR_RETURN(DeviceBuffer sum, allocate(sizeof(float)));
  LS_RETURN_IF_ERROR(fill_uniform(data.view(DType::kF32, 1, n), 7, -1.0f, 1.0f));
  cudaEvent_t start = nullptr, end = nullptr;
  LS_CUDA_CHECK(cudaEventCreate(&start));
  if (const cudaError_t e = cudaEventCreate(&end); e != cudaSuccess) {
    cudaEventDestroy(start);
    return cuda_error(e, "cudaEventCreate");
  }
  float best_ms = 1e30f;
  Status st;
  for (int r = 0; r < repeats && st.ok(); ++r) {
    st = cuda_error(cudaMemsetAsync(sum.data(), 0, sizeof(float), stream_), "cudaMemsetAsync");
    if (st.ok()) st = cuda_error(cudaEventRecord(start, stream_), "cudaEventRecord");
    if (st.ok()) {
      st = launch_error(cuda::sum_floats(static_cast<const float*>(data.data()), n,
                                         static_cast<float*>(sum.data()), sm_count_, stream_),
                        "sum_floats");
    }
    if (st.ok()) st = cuda_error(cudaEventRecord(end, stream_), "cudaEventRecord");
    if (st.ok()) st = cuda_error(cudaEventSynchronize(end), "cudaEventSynchronize");
    float ms = 0.0f;
    if (st.ok()) st = cuda_error(cudaEventElapsedTime(&ms, start, end), "cudaEventElapsedTime");
    if (st.ok()) best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(end);
  LS_RETURN_IF_ERROR(st);
  return static_cast<double>(n) * sizeof(float) / (static_cast<double>(best_ms) * 1e-3);
}

Result<double> CudaBackend::upload_milliseconds(uint64_t ticket) {
  auto it = uploads_.find(ticket);
  if (it == uploads_.end())
    return not_found_error("cuda backend: upload {} is unknown or retired", ticket);
  LS_ASSIGN_OR_RETURN(const bool done, upload_done(ticket));
  if (!done) return failed_precondition_error("cuda backend: upload {} has not finished", ticket);
  float ms = 0.0f;
  LS_CUDA_CHECK(cudaEventElapsedTime(&ms, it->second.start, it->second.end));
  return static_cast<double>(ms);
}

namespace {

Result<CudaBackend*> as_cuda(const Backend& backend) {
  auto* c = dynamic_cast<const CudaBackend*>(&backend);
  if (c == nullptr) {
    return invalid_argument_error("expected the CUDA backend, got {}", backend.describe());
  }
  return const_cast<CudaBackend*>(c);
}

}  // namespace
}  // namespace cuda

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

std::string cuda_unavailable_reason() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fmt::format("no usable CUDA driver or GPU: cudaGetDeviceCount: {}",
                       cudaGetErrorString(e));
  }
  return count == 0 ? "the CUDA driver reports no device" : "";
}

Result<std::unique_ptr<Backend>> create_cuda_backend(const CudaOptions& options) {
  const int count = cuda_device_count();
  if (count == 0) {
    return failed_precondition_error("no CUDA GPU is visible ({})", cuda_unavailable_reason());
  }
  if (options.device < 0 || options.device >= count) {
    return invalid_argument_error("cuda:{} does not exist; {} GPU(s) are visible (cuda:0..{})",
                                  options.device, count, count - 1);
  }
  auto backend = std::make_unique<cuda::CudaBackend>(options);
  LS_RETURN_IF_ERROR(backend->init().with_context(fmt::format("cuda:{}", options.device)));
  return std::unique_ptr<Backend>(std::move(backend));
}

Result<CudaGraphStats> cuda_graph_stats(const Backend& backend) {
  LS_ASSIGN_OR_RETURN(cuda::CudaBackend * c, cuda::as_cuda(backend));
  return c->graph_stats();
}

Status cuda_fill_uniform(Backend& backend, const Tensor& t, uint64_t seed, float lo, float hi) {
  LS_ASSIGN_OR_RETURN(cuda::CudaBackend * c, cuda::as_cuda(backend));
  return c->fill_uniform(t, seed, lo, hi);
}

Result<double> cuda_read_bandwidth(Backend& backend, size_t bytes, int repeats) {
  LS_ASSIGN_OR_RETURN(cuda::CudaBackend * c, cuda::as_cuda(backend));
  return c->read_bandwidth(bytes, repeats);
}

Result<double> cuda_upload_milliseconds(Backend& backend, uint64_t ticket) {
  LS_ASSIGN_OR_RETURN(cuda::CudaBackend * c, cuda::as_cuda(backend));
  return c->upload_milliseconds(ticket);
}

}  // namespace loraserve::kernels
