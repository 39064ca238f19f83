// Token selection on the device with the CPU sampler's semantics (kernels/cpu/cpu_sample.cpp):
// greedy = argmax with the lowest id on ties; temperature sampling by inverse CDF over the
// weights exp((l - max) / T) in token order with the caller's uniform draw; top-k and top-p over
// the tokens sorted by logit (lowest id first among equal logits); logprobs = log-softmax of the
// raw logits, as (l - max) - log(sum exp(l - max)). Weights are summed in f64 as on the CPU.
//   1. Row statistics, each row cut into parts of about 4K logits so that a 128K-token row keeps
//      32 blocks busy instead of one (on an H200, 28 us a step at batch 1 and 70 at batch 64;
//      95 as one block per row):
//      part_max_kernel (a block per part: max, argmax, the part's sort keys), part_sums_kernel (a
//      block per part: the sums of exp(l - max) and of the temperature weights), row_pick_kernel
//      (a block per row: max, argmax, log-sum; the greedy or plain-temperature pick, searching
//      only the part the draw falls in).
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
constexpr int kPartThreads = 256;      // threads of the row-statistics kernels
constexpr int64_t kPartLogits = 4096;  // logits per part, about
constexpr int64_t kMaxParts = 64;

struct RowStats {
  float max;
  float log_sum;  // log of the sum of exp(l - max): logprob(i) = (l_i - max) - log_sum
};

// One part of a row: its max and argmax (lowest id among equal maxima; -inf and INT64_MAX when
// every logit is NaN), the sum of exp(l - row max) and of the plain-temperature weights.
struct PartStats {
  float max;
  int64_t argmax;
  double sum;
  double weights;
};

int64_t parts_for(int64_t vocab) {
  const int64_t parts = (vocab + kPartLogits - 1) / kPartLogits;
  return parts < 1 ? 1 : (parts > kMaxParts ? kMaxParts : parts);
}

// Carved out of the caller's scratch buffer, in this order, each aligned to 256 bytes.
struct SampleScratch {
  RowStats* stats = nullptr;     // [rows]
  PartStats* parts = nullptr;    // [rows][parts_for(vocab)]
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
  s->parts = reinterpret_cast<PartStats*>(
      carve(static_cast<size_t>(rows * parts_for(vocab)) * sizeof(PartStats)));
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

// A token's plain-temperature weight exp((l - max) / T), in f64 as on the CPU. The one formula of
// every kernel that sums or walks weights: part_sums_kernel's part totals pick the part that
// row_pick_kernel sums again, so both must compute the same values.
template <typename L>
struct TemperatureWeight {
  const L* l;
  float max;
  float inv_t;  // 1 / T
  __device__ double operator()(int64_t i) const {
    return exp(static_cast<double>((to_float(l[i]) - max) * inv_t));
  }
};

// Logits [begin, end) of one part of a row of `vocab`, cut into `parts`.
__device__ __forceinline__ void part_range(int64_t vocab, int64_t parts, int64_t part,
                                           int64_t* begin, int64_t* end) {
  const int64_t size = (vocab + parts - 1) / parts;
  *begin = min(vocab, part * size);
  *end = min(vocab, *begin + size);
}

__device__ __forceinline__ bool better(float v, int64_t i, float best, int64_t best_i) {
  return v > best || (v == best && i < best_i);
}

// The block's max and argmax (lowest id among equal maxima), returned to every thread. Every
// thread calls it.
__device__ void block_argmax(float* best, int64_t* best_i) {
  __shared__ float best_s[32];
  __shared__ int64_t best_i_s[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, *best, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, *best_i, o);
    if (better(ov, oi, *best, *best_i)) {
      *best = ov;
      *best_i = oi;
    }
  }
  __syncthreads();  // an earlier call may still read best_s
  if (lane == 0) {
    best_s[warp] = *best;
    best_i_s[warp] = *best_i;
  }
  __syncthreads();
  *best = best_s[0];
  *best_i = best_i_s[0];
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) {
    if (better(best_s[w], best_i_s[w], *best, *best_i)) {
      *best = best_s[w];
      *best_i = best_i_s[w];
    }
  }
}

// The row's max, argmax (0 when every logit is NaN, as on the CPU) from its parts' statistics.
__device__ void row_max(const PartStats* parts, int64_t num_parts, float* mx, int64_t* argmax) {
  float best = -INFINITY;
  int64_t best_i = LLONG_MAX;
  for (int64_t b = 0; b < num_parts; ++b) {
    if (better(parts[b].max, parts[b].argmax, best, best_i)) {
      best = parts[b].max;
      best_i = parts[b].argmax;
    }
  }
  *mx = best;
  *argmax = best_i == LLONG_MAX ? 0 : best_i;
}

// A plain-temperature row's weights over one part, each thread summing the contiguous chunk
// [*begin, *end) of it; returns the thread's own sum, *prefix the sum of the chunks before it and
// *total the part's sum. part_sums_kernel and row_pick_kernel both call it, so the part's total
// that picks the part is the one its search sums again. Every thread calls it.
template <typename W>
__device__ __forceinline__ double chunked_weights(W weight, int64_t part_begin, int64_t part_end,
                                                  int64_t* begin, int64_t* end, double* prefix,
                                                  double* total) {
  const int64_t chunk = (part_end - part_begin + blockDim.x - 1) / blockDim.x;
  *begin = min(part_end, part_begin + threadIdx.x * chunk);
  *end = min(part_end, *begin + chunk);
  double own = 0.0;
  for (int64_t i = *begin; i < *end; ++i) own += weight(i);
  *prefix = block_exclusive_scan(own, total);
  return own;
}

// grid: (rows, parts). The part's max and argmax; the part's sort keys for rows that need an
// order.
template <typename L>
__global__ void __launch_bounds__(kPartThreads)
    part_max_kernel(const L* logits, int64_t stride, int64_t vocab,
                    const DeviceSampleParams* params, SampleScratch scratch) {
  const int64_t row = blockIdx.x, part = blockIdx.y, num_parts = gridDim.y;
  const L* l = logits + row * stride;
  const DeviceSampleParams p = params[row];
  int64_t begin, end;
  part_range(vocab, num_parts, part, &begin, &end);
  float best = -INFINITY;
  int64_t best_i = LLONG_MAX;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float v = to_float(l[i]);
    if (better(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
  block_argmax(&best, &best_i);
  if (threadIdx.x == 0) {
    PartStats& st = scratch.parts[row * num_parts + part];
    st.max = best;
    st.argmax = best_i;
  }
  if (p.sorted_row >= 0) {
    uint64_t* keys = scratch.keys_in + p.sorted_row * vocab;
    int32_t* ids = scratch.ids_in + p.sorted_row * vocab;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      keys[i] = (static_cast<uint64_t>(p.sorted_row) << 32) | ~orderable(to_float(l[i]));
      ids[i] = static_cast<int32_t>(i);
    }
  }
}

// grid: (rows, parts). The part's sum of exp(l - row max), and for plain-temperature rows the
// sum of its weights exp((l - row max) / T), in f64.
template <typename L>
__global__ void __launch_bounds__(kPartThreads)
    part_sums_kernel(const L* logits, int64_t stride, int64_t vocab,
                     const DeviceSampleParams* params, SampleScratch scratch) {
  const int64_t row = blockIdx.x, part = blockIdx.y, num_parts = gridDim.y;
  const L* l = logits + row * stride;
  const DeviceSampleParams p = params[row];
  PartStats* parts = scratch.parts + row * num_parts;
  float mx;
  int64_t argmax;
  row_max(parts, num_parts, &mx, &argmax);
  int64_t begin, end;
  part_range(vocab, num_parts, part, &begin, &end);
  double sum = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    sum += exp(static_cast<double>(to_float(l[i]) - mx));
  }
  double total;
  block_exclusive_scan(sum, &total);
  double weights = 0.0;
  if (p.temperature > 0.0f && !p.filtered) {
    const TemperatureWeight<L> weight{l, mx, 1.0f / p.temperature};
    int64_t chunk_begin, chunk_end;
    double prefix;
    chunked_weights(weight, begin, end, &chunk_begin, &chunk_end, &prefix, &weights);
  }
  if (threadIdx.x == 0) {  // other blocks of the row read only the parts' maxima
    parts[part].sum = total;
    parts[part].weights = weights;
  }
}

// grid: rows. The row's statistics from its parts; the greedy pick, or the plain-temperature
// draw: the first token whose cumulative weight, in token order, passes uniform * total. Only
// the part the draw falls in is searched.
template <typename L>
__global__ void __launch_bounds__(kPartThreads)
    row_pick_kernel(const L* logits, int64_t stride, int64_t vocab, int64_t num_parts,
                    const DeviceSampleParams* params, SampleScratch scratch,
                    DeviceSampleResult* results) {
  const int64_t row = blockIdx.x;
  const L* l = logits + row * stride;
  const DeviceSampleParams p = params[row];
  const PartStats* parts = scratch.parts + row * num_parts;
  float mx;
  int64_t chosen;
  row_max(parts, num_parts, &mx, &chosen);
  double total = 0.0;
  for (int64_t b = 0; b < num_parts; ++b) total += parts[b].sum;
  const float log_sum = static_cast<float>(log(total));

  if (p.temperature > 0.0f && !p.filtered) {
    double weights_total = 0.0;
    for (int64_t b = 0; b < num_parts; ++b) weights_total += parts[b].weights;
    const double target = static_cast<double>(p.uniform) * weights_total;
    double before = 0.0;  // the weights of the parts before the one the draw falls in
    int64_t hit = -1;
    for (int64_t b = 0; b < num_parts; ++b) {
      if (before <= target && target < before + parts[b].weights) {
        hit = b;
        break;
      }
      before += parts[b].weights;
    }
    chosen = vocab - 1;  // rounding may leave the draw past every part
    if (hit >= 0) {
      const TemperatureWeight<L> weight{l, mx, 1.0f / p.temperature};
      int64_t part_begin, part_end, begin, end;
      part_range(vocab, num_parts, hit, &part_begin, &part_end);
      double prefix, part_total;
      const double own =
          chunked_weights(weight, part_begin, part_end, &begin, &end, &prefix, &part_total);
      chosen = block_first_crossing(weight, begin, end, before + prefix, own, target, part_end - 1);
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
  if (!(p.temperature > 0.0f) || !p.filtered) return;  // row_pick_kernel has picked

  const int64_t k = p.top_k > 0 ? min(int64_t{p.top_k}, vocab) : vocab;
  const TemperatureWeight<L> token_weight{l, st.max, 1.0f / p.temperature};
  auto weight = [&](int64_t j) { return token_weight(ids[j]); };
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
    const int64_t parts = parts_for(vocab);
    const dim3 part_grid(static_cast<unsigned>(rows), static_cast<unsigned>(parts));
    Launch r = launch(part_max_kernel<L>, part_grid, kPartThreads, 0, stream, l, logits_stride,
                      vocab, params, s);
    if (r.ok()) {
      r = launch(part_sums_kernel<L>, part_grid, kPartThreads, 0, stream, l, logits_stride, vocab,
                 params, s);
    }
    if (r.ok()) {
      r = launch(row_pick_kernel<L>, static_cast<unsigned>(rows), kPartThreads, 0, stream, l,
                 logits_stride, vocab, parts, params, s, results);
    }
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
