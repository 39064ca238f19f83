// The small-row kernels for AVX-512 (cpu_rows.h), compiled through target attributes and called
// only on CPUs that have the instructions. Dot products are vectorized along the shared
// dimension, 16 f32 lanes wide, with masked loads for the last partial vector; lanes are summed
// once at the end. A tile is WR weight rows × XR input rows of accumulators; one input row
// (batch-1 decode) takes more weight rows per tile, so more loads are in flight.
//   F32:  4 × 4 (8 × 1).
//   BF16: a 32-element load is split into its even and odd elements, each widened to f32 exactly
//         (shift / mask), against input rows reordered to match (RowsInput::kF32Pairs); 4 × 4
//         (8 × 1). The products are those of f32 weights: no rounding beyond the f32 sums.
//   I8:   16 int8 widened to f32 per step. One input row: each 64-element group is summed apart
//         and then multiplied by its scale into the row's total (8 × 1); more rows: the widened
//         weights are scaled once and feed every row (4 × 4).
//   BF16 with AVX512_BF16: VDPBF16PS multiplies 32 bf16 weights by 32 bf16 inputs (x rounded to
//         bf16 once per call, RowsInput::kBF16) and sums pairs into 16 f32 lanes: per 64 bytes of
//         weights and input row one load and one product, against one load, two widening
//         operations and two FMAs above; 4 × 4 (8 × 1).
//   I8 with AVX512_VNNI: 32 int8 weights widened to int16 (one instruction), VPDPWSSD multiplies
//         them by 32 int16 inputs (x in int16 groups, RowsInput::kI16Groups) and sums pairs into
//         16 int32 lanes; a group's lanes, as f32, times its weight scale × input scale, into the
//         f32 sums. 7 instructions per 64 weights and input row, against 13 widening to f32; the
//         integer sums are exact (|sum| ≤ 4 · 127 · 32767 a lane). 4 × 4; one or two input
//         rows: one weight row at a time (one sequential stream per thread; kernel_bench,
//         8b-layers: 1.1-1.2× the speed of a tile's 8 or 4 interleaved rows), prefetched 6 KiB
//         ahead (1.05× at one row, 1.25× at two), several groups in flight.
#include <cstdint>

#include "common/dtype.h"
#include "kernels/cpu/cpu_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LORASERVE_ROWS_AVX512 1
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), a self-initialized variable that
// its own flow analysis then reports as uninitialized in every caller.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace loraserve::kernels::cpu {

#ifdef LORASERVE_ROWS_AVX512
namespace {

#define LS_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define LS_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx512bf16")))
#define LS_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx512vnni")))

static_assert(kI8GroupSize % 16 == 0, "an int8 group is whole 16-lane vectors");

// Stores the WR × XR dot products (lanes of acc plus the scalar tails) into y.
template <int WR, int XR>
LS_AVX512 inline void store(const RowsArgs& a, __m512 (&acc)[WR][XR], float (&tail)[WR][XR],
                            int64_t o, int64_t r) {
  for (int i = 0; i < WR; ++i) {
    for (int j = 0; j < XR; ++j) {
      const float s = _mm512_reduce_add_ps(acc[i][j]) + tail[i][j];
      float* out = a.y + (r + j) * a.ldy + o + i;
      *out = a.beta == 0.0f ? s : s + a.beta * *out;
    }
  }
}

template <int WR, int XR>
LS_AVX512 inline void zero(__m512 (&acc)[WR][XR]) {
#pragma GCC unroll 8
  for (int i = 0; i < WR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) acc[i][j] = _mm512_setzero_ps();
  }
}

// Lanes [0, count) set, count ≤ 16.
LS_AVX512 inline __mmask16 first_lanes(int64_t count) {
  return static_cast<__mmask16>((1u << count) - 1u);
}

template <int WR, int XR>
LS_AVX512 inline void tile_f32(const RowsArgs& a, int64_t o, int64_t r) {
  const float* w = static_cast<const float*>(a.w) + o * a.ldw;
  const float* x = static_cast<const float*>(a.x) + r * a.ldx;
  __m512 acc[WR][XR];
  float tail[WR][XR] = {};
  zero<WR, XR>(acc);
  int64_t k = 0;
  for (; k + 16 <= a.in; k += 16) {
    __m512 wv[WR];
#pragma GCC unroll 8
    for (int i = 0; i < WR; ++i) wv[i] = _mm512_loadu_ps(w + i * a.ldw + k);
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) {
      const __m512 xv = _mm512_loadu_ps(x + j * a.ldx + k);
#pragma GCC unroll 8
      for (int i = 0; i < WR; ++i) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  if (k < a.in) {
    const __mmask16 m = first_lanes(a.in - k);
    for (int i = 0; i < WR; ++i) {
      const __m512 wv = _mm512_maskz_loadu_ps(m, w + i * a.ldw + k);
      for (int j = 0; j < XR; ++j)
        acc[i][j] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + j * a.ldx + k), acc[i][j]);
    }
  }
  store<WR, XR>(a, acc, tail, o, r);
}

template <int WR, int XR>
LS_AVX512 inline void tile_bf16(const RowsArgs& a, int64_t o, int64_t r) {
  const uint16_t* w = static_cast<const uint16_t*>(a.w) + o * a.ldw;
  const float* x = static_cast<const float*>(a.x) + r * a.ldx;
  const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u));
  __m512 acc[WR][XR];
  float tail[WR][XR] = {};
  zero<WR, XR>(acc);
  int64_t k = 0;
  for (; k + 32 <= a.in; k += 32) {
    __m512 even[WR], odd[WR];
#pragma GCC unroll 8
    for (int i = 0; i < WR; ++i) {
      const __m512i v = _mm512_loadu_si512(w + i * a.ldw + k);
      even[i] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      odd[i] = _mm512_castsi512_ps(_mm512_and_si512(v, high));
    }
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) {
      const __m512 xe = _mm512_loadu_ps(x + j * a.ldx + k);
      const __m512 xo = _mm512_loadu_ps(x + j * a.ldx + k + 16);
#pragma GCC unroll 8
      for (int i = 0; i < WR; ++i) {
        acc[i][j] = _mm512_fmadd_ps(even[i], xe, acc[i][j]);
        acc[i][j] = _mm512_fmadd_ps(odd[i], xo, acc[i][j]);
      }
    }
  }
  for (; k < a.in; ++k) {
    for (int i = 0; i < WR; ++i) {
      for (int j = 0; j < XR; ++j) tail[i][j] += bf16_to_f32(w[i * a.ldw + k]) * x[j * a.ldx + k];
    }
  }
  store<WR, XR>(a, acc, tail, o, r);
}

// 16 int8 at p (the first `m` lanes) as f32.
LS_AVX512 inline __m512 load_i8(const int8_t* p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
LS_AVX512 inline __m512 load_i8(const int8_t* p, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}

template <int WR, int XR>
LS_AVX512 inline void tile_i8(const RowsArgs& a, int64_t o, int64_t r) {
  const int8_t* w = static_cast<const int8_t*>(a.w) + o * a.ldw;
  const float* s = a.scales + o * a.lds;
  const float* x = static_cast<const float*>(a.x) + r * a.ldx;
  __m512 acc[WR][XR], group[WR][XR];
  float tail[WR][XR] = {};
  zero<WR, XR>(acc);
  int64_t k = 0;
  for (; k + kI8GroupSize <= a.in; k += kI8GroupSize) {
    zero<WR, XR>(group);
#pragma GCC unroll 4
    for (int64_t v = 0; v < kI8GroupSize; v += 16) {
      __m512 wv[WR];
#pragma GCC unroll 8
      for (int i = 0; i < WR; ++i) wv[i] = load_i8(w + i * a.ldw + k + v);
#pragma GCC unroll 4
      for (int j = 0; j < XR; ++j) {
        const __m512 xv = _mm512_loadu_ps(x + j * a.ldx + k + v);
#pragma GCC unroll 8
        for (int i = 0; i < WR; ++i) group[i][j] = _mm512_fmadd_ps(wv[i], xv, group[i][j]);
      }
    }
    const int64_t g = k / kI8GroupSize;
#pragma GCC unroll 8
    for (int i = 0; i < WR; ++i) {
      const __m512 scale = _mm512_set1_ps(s[i * a.lds + g]);
#pragma GCC unroll 4
      for (int j = 0; j < XR; ++j) acc[i][j] = _mm512_fmadd_ps(group[i][j], scale, acc[i][j]);
    }
  }
  if (k < a.in) {  // the last group, shorter than kI8GroupSize
    zero<WR, XR>(group);
    for (int64_t v = k; v < a.in; v += 16) {
      const __mmask16 m = first_lanes(a.in - v < 16 ? a.in - v : 16);
      for (int i = 0; i < WR; ++i) {
        const __m512 wv = load_i8(w + i * a.ldw + v, m);
        for (int j = 0; j < XR; ++j) {
          group[i][j] =
              _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + j * a.ldx + v), group[i][j]);
        }
      }
    }
    for (int i = 0; i < WR; ++i) {
      const __m512 scale = _mm512_set1_ps(s[i * a.lds + k / kI8GroupSize]);
      for (int j = 0; j < XR; ++j) acc[i][j] = _mm512_fmadd_ps(group[i][j], scale, acc[i][j]);
    }
  }
  store<WR, XR>(a, acc, tail, o, r);
}

// I8 for several input rows: each widened weight vector is multiplied by its group's scale once
// and then feeds all XR rows, so one set of accumulators suffices (and WR can be 4).
template <int WR, int XR>
LS_AVX512 inline void tile_i8_scaled(const RowsArgs& a, int64_t o, int64_t r) {
  const int8_t* w = static_cast<const int8_t*>(a.w) + o * a.ldw;
  const float* s = a.scales + o * a.lds;
  const float* x = static_cast<const float*>(a.x) + r * a.ldx;
  __m512 acc[WR][XR];
  float tail[WR][XR] = {};
  zero<WR, XR>(acc);
  for (int64_t k = 0; k < a.in; k += kI8GroupSize) {
    const int64_t end = k + kI8GroupSize < a.in ? k + kI8GroupSize : a.in;
    __m512 scale[WR];
#pragma GCC unroll 8
    for (int i = 0; i < WR; ++i) scale[i] = _mm512_set1_ps(s[i * a.lds + k / kI8GroupSize]);
    if (end - k == kI8GroupSize) {
#pragma GCC unroll 4
      for (int64_t v = k; v < end; v += 16) {
        __m512 wv[WR];
#pragma GCC unroll 8
        for (int i = 0; i < WR; ++i) wv[i] = _mm512_mul_ps(load_i8(w + i * a.ldw + v), scale[i]);
#pragma GCC unroll 4
        for (int j = 0; j < XR; ++j) {
          const __m512 xv = _mm512_loadu_ps(x + j * a.ldx + v);
#pragma GCC unroll 8
          for (int i = 0; i < WR; ++i) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
        }
      }
      continue;
    }
    for (int64_t v = k; v < end; v += 16) {  // the last group, shorter than kI8GroupSize
      const __mmask16 m = first_lanes(end - v < 16 ? end - v : 16);
      for (int i = 0; i < WR; ++i) {
        const __m512 wv = _mm512_mul_ps(load_i8(w + i * a.ldw + v, m), scale[i]);
        for (int j = 0; j < XR; ++j)
          acc[i][j] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + j * a.ldx + v), acc[i][j]);
      }
    }
  }
  store<WR, XR>(a, acc, tail, o, r);
}

// x rounded to bf16.
template <int WR, int XR>
LS_AVX512BF16 inline void tile_bf16_dot(const RowsArgs& a, int64_t o, int64_t r) {
  const uint16_t* w = static_cast<const uint16_t*>(a.w) + o * a.ldw;
  const uint16_t* x = static_cast<const uint16_t*>(a.x) + r * a.ldx;
  __m512 acc[WR][XR];
  float tail[WR][XR] = {};
  zero<WR, XR>(acc);
  int64_t k = 0;
  for (; k + 32 <= a.in; k += 32) {
    __m512bh wv[WR];
#pragma GCC unroll 8
    for (int i = 0; i < WR; ++i) wv[i] = (__m512bh)_mm512_loadu_si512(w + i * a.ldw + k);
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) {
      const __m512bh xh = (__m512bh)_mm512_loadu_si512(x + j * a.ldx + k);
#pragma GCC unroll 8
      for (int i = 0; i < WR; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv[i], xh);
    }
  }
  if (k < a.in) {
    const __mmask32 m = static_cast<__mmask32>((1ull << (a.in - k)) - 1u);
    for (int i = 0; i < WR; ++i) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, w + i * a.ldw + k);
      for (int j = 0; j < XR; ++j) {
        const uint16_t* xr = x + j * a.ldx + k;
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv, (__m512bh)_mm512_maskz_loadu_epi16(m, xr));
      }
    }
  }
  store<WR, XR>(a, acc, tail, o, r);
}

// The 64 int8 weights of a group at p widened to int16 (lo: the first 32). A last group (Full
// false) of `left` < 64 weights reads the ones past it as 0 (x there is 0 too).
template <bool Full>
LS_AVX512VNNI inline void load_i8_group(const int8_t* p, int64_t left, __m512i& lo, __m512i& hi) {
  if constexpr (Full) {
    lo = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    hi = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
  } else {
    const __mmask32 mlo = left >= 32 ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
    const __mmask32 mhi = left > 32 ? (__mmask32{1} << (left - 32)) - 1 : 0;
    lo = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mlo, p));
    hi = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mhi, p + 32));
  }
}

template <int WR, int XR>
LS_AVX512VNNI inline void tile_i8_vnni(const RowsArgs& a, int64_t o, int64_t r) {
  static_assert(kI8GroupSize == 64, "a group is two 32-lane int16 vectors");
  const int8_t* w = static_cast<const int8_t*>(a.w) + o * a.ldw;
  const float* s = a.scales + o * a.lds;
  const int16_t* x = static_cast<const int16_t*>(a.x) + r * a.ldx;
  const float* xs = a.x_scales + r * a.ldxs;
  __m512 acc[WR][XR];
  zero<WR, XR>(acc);
  for (int64_t k = 0; k < a.in; k += kI8GroupSize) {
    __m512i lo[WR], hi[WR];
    if (k + kI8GroupSize <= a.in) {
#pragma GCC unroll 8
      for (int i = 0; i < WR; ++i) load_i8_group<true>(w + i * a.ldw + k, 0, lo[i], hi[i]);
    } else {
      for (int i = 0; i < WR; ++i) load_i8_group<false>(w + i * a.ldw + k, a.in - k, lo[i], hi[i]);
    }
    const int64_t g = k / kI8GroupSize;
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) {
      const __m512i x0 = _mm512_loadu_si512(x + j * a.ldx + k);
      const __m512i x1 = _mm512_loadu_si512(x + j * a.ldx + k + 32);
      const __m512 xscale = _mm512_set1_ps(xs[j * a.ldxs + g]);
#pragma GCC unroll 8
      for (int i = 0; i < WR; ++i) {
        __m512i sum = _mm512_dpwssd_epi32(_mm512_setzero_si512(), lo[i], x0);
        sum = _mm512_dpwssd_epi32(sum, hi[i], x1);
        const __m512 scale = _mm512_mul_ps(xscale, _mm512_set1_ps(s[i * a.lds + g]));
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[i][j]);
      }
    }
  }
  float tail[WR][XR] = {};
  store<WR, XR>(a, acc, tail, o, r);
}

// How far ahead of its reads the one-row order asks for weights (a hint: it never faults, also
// past the band's end). kernel_bench, 8b-layers int8, alternated: 1 row 6.65-6.93 ms without,
// 6.7-6.8 at 2 KiB, 6.5-6.6 at 4 KiB, 6.3-6.4 at 6 KiB; 2 rows 9.2 without, 7.2-7.4 with.
constexpr int64_t kOneRowPrefetchBytes = 6144;

// One weight row against XR input rows (x as kI16Groups, rows r..r+XR-1): weight rows one after
// another, so each thread reads its band of weights as one sequential stream, which memory serves
// faster than a tile's interleaved rows, prefetched ahead; U groups in flight, each into its own
// accumulators.
template <int XR, int U>
LS_AVX512VNNI inline void one_row_i8_vnni(const RowsArgs& a, int64_t o, int64_t r) {
  const int8_t* w = static_cast<const int8_t*>(a.w) + o * a.ldw;
  const float* s = a.scales + o * a.lds;
  const int16_t* x = static_cast<const int16_t*>(a.x) + r * a.ldx;
  const float* xs = a.x_scales + r * a.ldxs;
  __m512 acc[U][XR];
  zero<U, XR>(acc);
  for (int64_t k = 0; k < a.in; k += U * kI8GroupSize) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const int64_t at = k + u * kI8GroupSize;
      if (at >= a.in) break;
      // As an integer: the address may lie past the weights, where a pointer may not point.
      _mm_prefetch(
          reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(w + at) + kOneRowPrefetchBytes),
          _MM_HINT_T0);
      __m512i lo, hi;
      if (at + kI8GroupSize <= a.in) {
        load_i8_group<true>(w + at, 0, lo, hi);
      } else {
        load_i8_group<false>(w + at, a.in - at, lo, hi);
      }
      const int64_t g = at / kI8GroupSize;
#pragma GCC unroll 4
      for (int j = 0; j < XR; ++j) {
        const int16_t* xj = x + j * a.ldx + at;
        __m512i sum = _mm512_dpwssd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xj));
        sum = _mm512_dpwssd_epi32(sum, hi, _mm512_loadu_si512(xj + 32));
        acc[u][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum),
                                    _mm512_set1_ps(s[g] * xs[j * a.ldxs + g]), acc[u][j]);
      }
    }
  }
  __m512 total[1][XR];
  for (int j = 0; j < XR; ++j) {
    total[0][j] = acc[0][j];
    for (int u = 1; u < U; ++u) total[0][j] = _mm512_add_ps(total[0][j], acc[u][j]);
  }
  float tail[1][XR] = {};
  store<1, XR>(a, total, tail, o, r);
}

}  // namespace

LS_AVX512 void quantize_row_i16_avx512(const float* x, int64_t in, int16_t* q, float* scales) {
  static_assert(kI8GroupSize == 64, "a group is four 16-lane f32 vectors");
  const __mmask16 nonfinite_class = 0x01 | 0x08 | 0x10 | 0x80;  // quiet NaN, +Inf, -Inf, sNaN
  constexpr float kSmallestNormal = 0x1p-126f;
  for (int64_t g = 0, k = 0; k < in; ++g, k += kI8GroupSize) {
    __m512 v[4];
    __m512 largest = _mm512_setzero_ps();
    __mmask16 nonfinite = 0;
    for (int p = 0; p < 4; ++p) {
      const int64_t at = k + 16 * p;
      v[p] = at + 16 <= in ? _mm512_loadu_ps(x + at)
             : at < in     ? _mm512_maskz_loadu_ps(first_lanes(in - at), x + at)
                           : _mm512_setzero_ps();
      largest = _mm512_max_ps(largest, _mm512_abs_ps(v[p]));
      nonfinite |= _mm512_fpclass_ps_mask(v[p], nonfinite_class);
    }
    const float top = _mm512_reduce_max_ps(largest);
    int16_t* qg = q + k;
    if (nonfinite != 0 || top == 0.0f) {
      for (int p = 0; p < 4; ++p)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qg + 16 * p), _mm256_setzero_si256());
      scales[g] = nonfinite != 0 ? __builtin_nanf("") : 0.0f;
      continue;
    }
    // The step is top / 32767, or 2^-126 (the smallest normal f32) where that would be
    // subnormal and lose its bits; x · 2^126 is then exact and below 32767.
    const bool tiny = top < 32767.0f * kSmallestNormal;
    const float step = tiny ? kSmallestNormal : top / 32767.0f;
    // x · (32767 / top) rounded to nearest even (MXCSR's mode) is at most 32767.004: 32767.
    const __m512 inverse = _mm512_set1_ps(tiny ? 1.0f / kSmallestNormal : 32767.0f / top);
    for (int p = 0; p < 4; ++p) {
      const __m512i i32 = _mm512_cvtps_epi32(_mm512_mul_ps(v[p], inverse));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qg + 16 * p), _mm512_cvtsepi32_epi16(i32));
    }
    scales[g] = step;
  }
}

namespace {

// Each kernel's tiles as Tile<WR, XR>::run, for the one driver below. The F32, BF16 and I8 tiles
// share the driver's instruction set and inline into it; the BF16-dot and VNNI ones, compiled for
// more, are called once per tile.
template <int WR, int XR>
struct F32Tile {
  LS_AVX512 static void run(const RowsArgs& a, int64_t o, int64_t r) { tile_f32<WR, XR>(a, o, r); }
};
template <int WR, int XR>
struct BF16Tile {
  LS_AVX512 static void run(const RowsArgs& a, int64_t o, int64_t r) { tile_bf16<WR, XR>(a, o, r); }
};
template <int WR, int XR>
struct I8Tile {
  LS_AVX512 static void run(const RowsArgs& a, int64_t o, int64_t r) {
    if constexpr (XR == 1) {
      tile_i8<WR, XR>(a, o, r);
    } else {
      tile_i8_scaled<WR, XR>(a, o, r);
    }
  }
};
template <int WR, int XR>
struct BF16DotTile {
  LS_AVX512BF16 static void run(const RowsArgs& a, int64_t o, int64_t r) {
    tile_bf16_dot<WR, XR>(a, o, r);
  }
};
template <int WR, int XR>
struct I8VnniTile {
  LS_AVX512VNNI static void run(const RowsArgs& a, int64_t o, int64_t r) {
    tile_i8_vnni<WR, XR>(a, o, r);
  }
};

// Every input row for WR weight rows at o: tiles of 4 input rows, then the 1-3 left.
template <template <int, int> class Tile, int WR>
LS_AVX512 void all_rows(const RowsArgs& a, int64_t o) {
  int64_t r = 0;
  for (; r + 4 <= a.n; r += 4) Tile<WR, 4>::run(a, o, r);
  switch (a.n - r) {
    case 3:
      Tile<WR, 3>::run(a, o, r);
      break;
    case 2:
      Tile<WR, 2>::run(a, o, r);
      break;
    case 1:
      Tile<WR, 1>::run(a, o, r);
      break;
    default:
      break;
  }
}

// Columns [o0, o1): tiles of WR weight rows (WR1 when there is one input row), then single rows.
template <template <int, int> class Tile, int WR, int WR1>
LS_AVX512 void columns(const RowsArgs& a, int64_t o0, int64_t o1) {
  int64_t o = o0;
  if (a.n == 1) {
    for (; o + WR1 <= o1; o += WR1) Tile<WR1, 1>::run(a, o, 0);
  } else {
    for (; o + WR <= o1; o += WR) all_rows<Tile, WR>(a, o);
  }
  for (; o < o1; ++o) all_rows<Tile, 1>(a, o);
}

}  // namespace

void rows_f32_avx512(const RowsArgs& a, int64_t o0, int64_t o1) {
  columns<F32Tile, 4, 8>(a, o0, o1);
}
void rows_bf16_avx512(const RowsArgs& a, int64_t o0, int64_t o1) {
  columns<BF16Tile, 4, 8>(a, o0, o1);
}
void rows_i8_avx512(const RowsArgs& a, int64_t o0, int64_t o1) { columns<I8Tile, 4, 8>(a, o0, o1); }
void rows_bf16_dot_avx512(const RowsArgs& a, int64_t o0, int64_t o1) {
  columns<BF16DotTile, 4, 8>(a, o0, o1);
}
void rows_i8_vnni_avx512(const RowsArgs& a, int64_t o0, int64_t o1) {
  switch (a.n) {
    case 1:
      for (int64_t o = o0; o < o1; ++o) one_row_i8_vnni<1, 4>(a, o, 0);
      return;
    case 2:
      for (int64_t o = o0; o < o1; ++o) one_row_i8_vnni<2, 2>(a, o, 0);
      return;
    default:  // 3 rows or more: one input row never reaches the tiles (WR1 = WR: no 8 × 1 tile)
      columns<I8VnniTile, 4, 4>(a, o0, o1);
  }
}

#else

// Never chosen off x86-64 (kernel_level() is portable there); the portable kernels stand in.
void rows_f32_avx512(const RowsArgs& a, int64_t o0, int64_t o1) { rows_f32_portable(a, o0, o1); }
void rows_bf16_avx512(const RowsArgs& a, int64_t o0, int64_t o1) { rows_bf16_portable(a, o0, o1); }
void rows_i8_avx512(const RowsArgs& a, int64_t o0, int64_t o1) { rows_i8_portable(a, o0, o1); }
void rows_bf16_dot_avx512(const RowsArgs& a, int64_t o0, int64_t o1) {
  rows_bf16_portable(a, o0, o1);
}
void rows_i8_vnni_avx512(const RowsArgs& a, int64_t o0, int64_t o1) { rows_i8_portable(a, o0, o1); }
void quantize_row_i16_avx512(const float*, int64_t, int16_t*, float*) {}

#endif

}  // namespace loraserve::kernels::cpu
