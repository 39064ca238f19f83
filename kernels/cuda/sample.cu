// Token selection on the device with the CPU sampler's semantics (kernels/cpu/cpu_sample.cpp):
// greedy = argmax with the lowest id on ties; temperature sampling by inverse CDF over the
// weights exp((l - max) / T) in token order with the caller's uniform draw; top-k and top-p over
// the tokens sorted by logit (lowest id first among equal logits); logprobs = log-softmax of the
// raw logits, as (l - max) - log(sum exp(l - max)). Weights are summed in f64 as on the CPU.
//   1. row_stats_kernel, one block per row: max, argmax, log-sum; greedy and plain-temperature
//      picks; the sort keys of rows that need an order.
//   2. cub::DeviceRadixSort over (row, descending logit) keys; stable, so ids stay ascending
//      among equal logits.
//   3. sorted_pick_kernel, one block per sorted row: top-k / top-p picks and top logprobs.
#include <climits>
#include <cstdint>
#include <cub/cub.cuh>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {
namespace {

constexpr int kThreads = 1024;

struct RowStats {
  float max;
  float log_sum;  // log of the sum of exp(l - max): logprob(i) = (l_i - max) - log_sum
};

// Carved out of the caller's scratch buffer, in this order, each aligned to 256 bytes.
struct SampleScratch {
  RowStats* stats = nullptr;     // [rows]
  uint64_t* keys_in = nullptr;   // [sorted_rows * vocab]
  uint64_t* keys_out = nullptr;  // [sorted_rows * vocab]
  int32_t* ids_in = nullptr;     // [sorted_rows * vocab]
  int32_t* ids_out = nullptr;    // [sorted_rows * vocab]
  void* sort_temp = nullptr;
  size_t sort_temp_bytes = 0;
  size_t total = 0;
};

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

int key_row_bits(int64_t sorted_rows) {
  int bits = 0;
  while ((int64_t{1} << bits) < sorted_rows) ++bits;
  return bits;
}

// Lays the scratch out over `base` (nullptr: only sizes it).
cudaError_t layout_scratch(char* base, int64_t rows, int64_t sorted_rows, int64_t vocab,
                           SampleScratch* s) {
  size_t off = 0;
  auto carve = [&](size_t bytes) {
    char* p = base != nullptr ? base + off : nullptr;
    off += align256(bytes);
    return p;
  };
  const size_t n = static_cast<size_t>(sorted_rows * vocab);
  s->stats = reinterpret_cast<RowStats*>(carve(static_cast<size_t>(rows) * sizeof(RowStats)));
  s->keys_in = reinterpret_cast<uint64_t*>(carve(n * sizeof(uint64_t)));
  s->keys_out = reinterpret_cast<uint64_t*>(carve(n * sizeof(uint64_t)));
  s->ids_in = reinterpret_cast<int32_t*>(carve(n * sizeof(int32_t)));
  s->ids_out = reinterpret_cast<int32_t*>(carve(n * sizeof(int32_t)));
  s->sort_temp_bytes = 0;
  if (n > 0) {
    const cudaError_t e = cub::DeviceRadixSort::SortPairs(
        nullptr, s->sort_temp_bytes, s->keys_in, s->keys_out, s->ids_in, s->ids_out,
        static_cast<int>(n), 0, 32 + key_row_bits(sorted_rows));
    if (e != cudaSuccess) return e;
  }
  s->sort_temp = carve(s->sort_temp_bytes);
  s->total = off;
  return cudaSuccess;
}

// kernels

// A float as an unsigned key with the same order; -0 is taken as +0 (the CPU compares them equal).
__device__ __forceinline__ uint32_t orderable(float f) {
  const uint32_t bits = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}

__device__ __forceinline__ double warp_inclusive_scan(double v) {
  const int lane = threadIdx.x & 31;
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += y;
  }
  return v;
}

// The sum of v over threads before this one; *total gets the block's sum. Every thread calls it.
__device__ double block_exclusive_scan(double v, double* total) {
  __shared__ double warp_totals[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  const double inclusive = warp_inclusive_scan(v);
  __syncthreads();  // an earlier call may still read warp_totals
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    const double t = warp_inclusive_scan(lane < num_warps ? warp_totals[lane] : 0.0);
    warp_totals[lane] = t;
  }
  __syncthreads();
  *total = warp_totals[num_warps - 1];
  return (warp > 0 ? warp_totals[warp - 1] : 0.0) + inclusive - v;
}

// The first index i in [0, n) with cumulative(weight(0..i)) > target, where each thread owns the
// contiguous chunk [begin, end); `prefix` is the sum of the chunks before it and `sum` its own.
// Returns `fallback` when no index qualifies. Every thread calls it.
template <typename W>
__device__ int64_t block_first_crossing(W weight, int64_t begin, int64_t end, double prefix,
                                        double sum, double target, int64_t fallback) {
  __shared__ long long first;
  if (threadIdx.x == 0) first = LLONG_MAX;
  __syncthreads();
  if (begin < end && prefix <= target && target < prefix + sum) {
    double acc = prefix;
    int64_t found = end - 1;  // rounding may leave the crossing just past the chunk's sum
    for (int64_t i = begin; i < end; ++i) {
      acc += weight(i);
      if (acc > target) {
        found = i;
        break;
      }
    }
    atomicMin(&first, static_cast<long long>(found));
  }
  __syncthreads();
  const int64_t result = first == LLONG_MAX ? fallback : static_cast<int64_t>(first);
  __syncthreads();  // `first` is reused by the next call
  return result;
}

template <typename L>
__global__ void __launch_bounds__(kThreads)
    row_stats_kernel(const L* logits, int64_t stride, int64_t vocab,
                     const DeviceSampleParams* params, SampleScratch scratch,
                     DeviceSampleResult* results) {
  __shared__ float best_s[32];
  __shared__ int64_t best_i_s[32];
  const int64_t row = blockIdx.x;
  const L* l = logits + row * stride;
  const DeviceSampleParams p = params[row];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // Max and argmax (lowest id among equal maxima).
  float best = -INFINITY;
  int64_t best_i = LLONG_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = to_float(l[i]);
    if (v > best || (v == best && i < best_i)) {
      best = v;
      best_i = i;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (ov > best || (ov == best && oi < best_i)) {
      best = ov;
      best_i = oi;
    }
  }
  if (lane == 0) {
    best_s[warp] = best;
    best_i_s[warp] = best_i;
  }
  __syncthreads();
  best = best_s[0];
  best_i = best_i_s[0];
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) {
    if (best_s[w] > best || (best_s[w] == best && best_i_s[w] < best_i)) {
      best = best_s[w];
      best_i = best_i_s[w];
    }
  }
  if (best_i == LLONG_MAX) best_i = 0;  // every logit NaN: the CPU keeps id 0 too
  const float mx = best;

  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    sum += exp(static_cast<double>(to_float(l[i]) - mx));
  }
  double total;
  block_exclusive_scan(sum, &total);
  const float log_sum = static_cast<float>(log(total));

  int64_t chosen = best_i;
  if (p.temperature > 0.0f && !p.filtered) {
    const float inv_t = 1.0f / p.temperature;
    auto weight = [&](int64_t i) {
      return exp(static_cast<double>((to_float(l[i]) - mx) * inv_t));
    };
    const int64_t chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int64_t begin = min(vocab, threadIdx.x * chunk);
    const int64_t end = min(vocab, begin + chunk);
    double own = 0.0;
    for (int64_t i = begin; i < end; ++i) own += weight(i);
    double weights_total;
    const double prefix = block_exclusive_scan(own, &weights_total);
    chosen = block_first_crossing(weight, begin, end, prefix, own,
                                  static_cast<double>(p.uniform) * weights_total, vocab - 1);
  }
  if (p.sorted_row >= 0) {
    uint64_t* keys = scratch.keys_in + p.sorted_row * vocab;
    int32_t* ids = scratch.ids_in + p.sorted_row * vocab;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      keys[i] = (static_cast<uint64_t>(p.sorted_row) << 32) | ~orderable(to_float(l[i]));
      ids[i] = static_cast<int32_t>(i);
    }
  }
  if (threadIdx.x == 0) {
    scratch.stats[row] = RowStats{mx, log_sum};
    results[row] =
        DeviceSampleResult{static_cast<int32_t>(chosen), (to_float(l[chosen]) - mx) - log_sum};
  }
}

template <typename L>
__global__ void __launch_bounds__(kThreads)
    sorted_pick_kernel(const L* logits, int64_t stride, int64_t vocab,
                       const DeviceSampleParams* params, SampleScratch scratch,
                       int32_t max_logprobs, DeviceSampleResult* results, int32_t* top_ids,
                       float* top_logprobs) {
  const int64_t row = blockIdx.x;
  const DeviceSampleParams p = params[row];
  if (p.sorted_row < 0) return;
  const L* l = logits + row * stride;
  const int32_t* ids = scratch.ids_out + p.sorted_row * vocab;
  const RowStats st = scratch.stats[row];

  const int64_t num_top = min(int64_t{min(p.num_logprobs, max_logprobs)}, vocab);
  for (int64_t j = threadIdx.x; j < num_top; j += blockDim.x) {
    top_ids[row * max_logprobs + j] = ids[j];
    top_logprobs[row * max_logprobs + j] = (to_float(l[ids[j]]) - st.max) - st.log_sum;
  }
  if (!(p.temperature > 0.0f) || !p.filtered) return;  // row_stats_kernel has picked

  const int64_t k = p.top_k > 0 ? min(int64_t{p.top_k}, vocab) : vocab;
  const float inv_t = 1.0f / p.temperature;
  auto weight = [&](int64_t j) {
    return exp(static_cast<double>((to_float(l[ids[j]]) - st.max) * inv_t));
  };
  const int64_t chunk = (k + blockDim.x - 1) / blockDim.x;
  const int64_t begin = min(k, threadIdx.x * chunk);
  const int64_t end = min(k, begin + chunk);
  double own = 0.0;
  for (int64_t j = begin; j < end; ++j) own += weight(j);
  double total;
  double prefix = block_exclusive_scan(own, &total);

  int64_t keep = k;
  if (p.top_p <= 0.0f) {
    keep = 1;  // as on the CPU: the first candidate alone reaches any top_p <= 0
    const int64_t kept_end = min(end, keep);
    own = 0.0;
    for (int64_t j = begin; j < kept_end; ++j) own += weight(j);
    prefix = block_exclusive_scan(own, &total);
  } else if (p.top_p < 1.0f) {
    // The smallest most-likely prefix whose probability reaches top_p: the first j whose
    // cumulative weight is >= top_p * total, i.e. > the largest value below that.
    const double target = static_cast<double>(p.top_p) * total;
    const double below = nextafter(target, -1.0);
    keep = block_first_crossing(weight, begin, end, prefix, own, below, k - 1) + 1;
    // Restrict the weights to the kept prefix.
    const int64_t kept_end = min(end, keep);
    own = 0.0;
    for (int64_t j = begin; j < kept_end; ++j) own += weight(j);
    prefix = block_exclusive_scan(own, &total);
  }
  const int64_t kept_end = min(end, keep);
  const int64_t j = block_first_crossing(weight, begin, kept_end, prefix, own,
                                         static_cast<double>(p.uniform) * total, keep - 1);
  if (threadIdx.x == 0) {
    const int32_t token = ids[j];
    results[row] = DeviceSampleResult{token, (to_float(l[token]) - st.max) - st.log_sum};
  }
}

}  // namespace

// launchers

size_t sample_scratch_bytes(int64_t rows, int64_t sorted_rows, int64_t vocab) {
  SampleScratch s;
  if (layout_scratch(nullptr, rows, sorted_rows, vocab, &s) != cudaSuccess) return 0;
  return s.total;
}

Launch sample_rows(DType logits_dtype, const void* logits, int64_t logits_stride, int64_t rows,
                   int64_t vocab, const DeviceSampleParams* params, int64_t sorted_rows,
                   int32_t max_logprobs, void* scratch, size_t scratch_bytes,
                   DeviceSampleResult* results, int32_t* top_ids, float* top_logprobs,
                   cudaStream_t stream) {
  if (rows <= 0 || vocab <= 0 || logits_stride < vocab) return refuse("sample: bad shape");
  if (sorted_rows < 0 || sorted_rows > rows || max_logprobs < 0)
    return refuse("sample: bad sorted_rows or max_logprobs");
  if (sorted_rows * vocab > INT_MAX) return refuse("sample: too many sorted logits for one sort");
  SampleScratch s;
  cudaError_t e = layout_scratch(static_cast<char*>(scratch), rows, sorted_rows, vocab, &s);
  if (e != cudaSuccess) return Launch{nullptr, e};
  if (s.total > scratch_bytes) return refuse("sample: scratch smaller than sample_scratch_bytes");
  auto run = [&](auto tag) -> Launch {
    using L = decltype(tag);
    const L* l = static_cast<const L*>(logits);
    Launch r = launch(row_stats_kernel<L>, static_cast<unsigned>(rows), kThreads, 0, stream, l,
                      logits_stride, vocab, params, s, results);
    if (!r.ok() || sorted_rows == 0) return r;
    size_t temp_bytes = s.sort_temp_bytes;
    const cudaError_t se = cub::DeviceRadixSort::SortPairs(
        s.sort_temp, temp_bytes, s.keys_in, s.keys_out, s.ids_in, s.ids_out,
        static_cast<int>(sorted_rows * vocab), 0, 32 + key_row_bits(sorted_rows), stream);
    if (se != cudaSuccess) return Launch{nullptr, se};
    return launch(sorted_pick_kernel<L>, static_cast<unsigned>(rows), kThreads, 0, stream, l,
                  logits_stride, vocab, params, s, max_logprobs, results, top_ids, top_logprobs);
  };
  switch (logits_dtype) {
    case DType::kF32:
      return run(float{});
    case DType::kBF16:
      return run(__nv_bfloat16{});
    case DType::kF16:
      return run(__half{});
    default:
      return refuse("sample: logits must be F32, F16 or BF16");
  }
}

}  // namespace loraserve::kernels::cuda
