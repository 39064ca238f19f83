#include "kernels/backend.h"

#include <spdlog/spdlog.h>

#include <charconv>

#include "kernels/cpu/cpu_backend.h"
#ifdef LORASERVE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace loraserve::kernels {

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    backend_ = o.backend_;
    data_ = o.data_;
    bytes_ = o.bytes_;
    host_ = o.host_;
    o.backend_ = nullptr;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (backend_ != nullptr && data_ != nullptr) {
    if (host_) {
      backend_->free_host(data_);
    } else {
      backend_->free(data_);
    }
  }
  backend_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

namespace {
size_t round_up_64(size_t bytes) { return (bytes + 63) / 64 * 64; }
}  // namespace

size_t weight_storage_bytes(DType dtype, int64_t rows, int64_t cols) {
  const size_t elements = round_up_64(static_cast<size_t>(rows * cols) * dtype_size(dtype));
  if (dtype != DType::kI8) return elements;
  const int64_t groups = (cols + kI8GroupSize - 1) / kI8GroupSize;
  return elements + static_cast<size_t>(rows * groups) * sizeof(float);
}

Tensor weight_view(void* base, DType dtype, int64_t rows, int64_t cols) {
  Tensor t = Tensor::make(base, dtype, rows, cols);
  if (dtype == DType::kI8) {
    t.scales = reinterpret_cast<float*>(static_cast<char*>(base) +
                                        round_up_64(static_cast<size_t>(rows * cols)));
  }
  return t;
}

Status check_sample_params(std::span<const SampleParams> params, int64_t vocab) {
  for (size_t r = 0; r < params.size(); ++r) {
    for (int32_t id : params[r].allowed) {
      if (id < 0 || id >= vocab) {
        return invalid_argument_error("sample: row {} allows token {}; the vocabulary is [0, {})",
                                      r, id, vocab);
      }
    }
    for (const LogitEdit& e : params[r].edits) {
      if (e.token_id < 0 || e.token_id >= vocab || !(e.penalty > 0.0f)) {
        return invalid_argument_error(
            "sample: row {} edits token {} with penalty {}; the vocabulary is [0, {})", r,
            e.token_id, e.penalty, vocab);
      }
    }
  }
  return ok_status();
}

std::string Backend::weight_dtype_reason(DType checkpoint) const {
  return fmt::format("the {} backend keeps {} checkpoints in {}", kind(), dtype_name(checkpoint),
                     dtype_name(weight_dtype(checkpoint)));
}

Result<std::optional<DType>> parse_weights_dtype_flag(std::string_view value) {
  if (value == "auto") return std::optional<DType>();
  if (value == "f32") return std::optional<DType>(DType::kF32);
  if (value == "bf16") return std::optional<DType>(DType::kBF16);
  if (value == "int8") return std::optional<DType>(DType::kI8);
  return invalid_argument_error("--weights-dtype '{}' is not one of auto, f32, bf16, int8",
                                value.substr(0, 32));
}

Result<std::optional<DType>> parse_lora_dtype_flag(std::string_view value) {
  if (value == "auto") return std::optional<DType>();
  if (value == "f32") return std::optional<DType>(DType::kF32);
  if (value == "bf16") return std::optional<DType>(DType::kBF16);
  return invalid_argument_error("--lora-dtype '{}' is not one of auto, f32, bf16",
                                value.substr(0, 32));
}

bool cuda_compiled_in() {
#ifdef LORASERVE_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

Result<std::unique_ptr<Backend>> create_backend(const BackendOptions& options) {
  const std::string& d = options.device;
  if (d == "cpu")
    return create_cpu_backend(options.cpu_threads, options.cpu_weight_dtype,
                              options.cpu_lora_dtype);
  const bool want_cuda = d == "cuda" || d.rfind("cuda:", 0) == 0;
  if (!want_cuda && d != "auto") {
    return invalid_argument_error("--device '{}' is not one of cpu, cuda, cuda:N, auto", d);
  }
#ifdef LORASERVE_HAVE_CUDA
  int device_index = 0;
  if (d.rfind("cuda:", 0) == 0) {
    // The whole rest must be the number: stoi would read "cuda:1x" as device 1.
    const std::string_view n = std::string_view(d).substr(5);
    const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), device_index);
    if (n.empty() || ec != std::errc() || end != n.data() + n.size() || device_index < 0)
      return invalid_argument_error("--device '{}': expected cuda:N with N a device number", d);
  }
  const int count = cuda_device_count();
  if (count > 0) {
    if (options.cpu_weight_dtype) {
      return invalid_argument_error(
          "--weights-dtype {} is for the CPU backend; the CUDA backend keeps weights in its "
          "compute dtype (use --device cpu, or leave --weights-dtype auto)",
          dtype_name(*options.cpu_weight_dtype));
    }
    if (options.cpu_lora_dtype) {
      return invalid_argument_error(
          "--lora-dtype {} is for the CPU backend; the CUDA backend keeps adapters in its "
          "compute dtype (use --device cpu, or leave --lora-dtype auto)",
          dtype_name(*options.cpu_lora_dtype));
    }
    CudaOptions cuda_options;
    cuda_options.device = device_index;
    cuda_options.compute_dtype = options.cuda_dtype;
    cuda_options.graphs = options.cuda_graphs;
    return create_cuda_backend(cuda_options);
  }
  if (want_cuda) {
    return failed_precondition_error("--device {}: no CUDA GPU is visible to this process ({})", d,
                                     cuda_unavailable_reason());
  }
  spdlog::info("device auto: no CUDA GPU found ({}); using the CPU", cuda_unavailable_reason());
#else
  if (want_cuda) {
    return failed_precondition_error(
        "--device {}: this build of loraserve has no CUDA backend "
        "(configure with -DLORASERVE_CUDA=ON where nvcc is installed)",
        d);
  }
  spdlog::info("device auto: this build has no CUDA backend; using the CPU");
#endif
  return create_cpu_backend(options.cpu_threads, options.cpu_weight_dtype, options.cpu_lora_dtype);
}

}  // namespace loraserve::kernels
