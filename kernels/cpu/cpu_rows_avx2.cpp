// The small-row kernels for AVX2 + FMA (cpu_rows.h), compiled through target attributes and
// called only on CPUs that have them. Each dot product is vectorized along the shared dimension,
// 8 lanes wide, and summed across lanes once at the end.
//   F32:  3 weight rows × 4 input rows of accumulators.
//   BF16: a 16-element load is split into its even and odd elements, each widened to f32 exactly
//         (shift / mask: a bf16 is the top half of an f32), against input rows reordered to match
//         (RowsInput::kF32Pairs); 2 × 4 tiles.
//   I8:   8 int8 widened to f32 and multiplied by their group's scale, then as F32; 3 × 4 tiles.
#include <cstdint>

#include "common/dtype.h"
#include "kernels/cpu/cpu_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LORASERVE_ROWS_AVX2 1
#endif

namespace loraserve::kernels::cpu {

#ifdef LORASERVE_ROWS_AVX2
namespace {

#define LS_AVX2 __attribute__((target("avx2,fma")))

LS_AVX2 inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Stores the WR × XR dot products (lanes of acc plus the scalar tails) into y.
template <int WR, int XR>
LS_AVX2 inline void store(const RowsArgs& a, __m256 (&acc)[WR][XR], float (&tail)[WR][XR],
                          int64_t o, int64_t r) {
  for (int i = 0; i < WR; ++i) {
    for (int j = 0; j < XR; ++j) {
      const float s = horizontal_sum(acc[i][j]) + tail[i][j];
      float* out = a.y + (r + j) * a.ldy + o + i;
      *out = a.beta == 0.0f ? s : s + a.beta * *out;
    }
  }
}

template <int WR, int XR>
LS_AVX2 inline void tile_f32(const RowsArgs& a, int64_t o, int64_t r) {
  const float* w = static_cast<const float*>(a.w) + o * a.ldw;
  const float* x = static_cast<const float*>(a.x) + r * a.ldx;
  __m256 acc[WR][XR];
  float tail[WR][XR] = {};
#pragma GCC unroll 4
  for (int i = 0; i < WR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 8 <= a.in; k += 8) {
    __m256 wv[WR];
#pragma GCC unroll 4
    for (int i = 0; i < WR; ++i) wv[i] = _mm256_loadu_ps(w + i * a.ldw + k);
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) {
      const __m256 xv = _mm256_loadu_ps(x + j * a.ldx + k);
#pragma GCC unroll 4
      for (int i = 0; i < WR; ++i) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  for (; k < a.in; ++k) {
    for (int i = 0; i < WR; ++i) {
      for (int j = 0; j < XR; ++j) tail[i][j] += w[i * a.ldw + k] * x[j * a.ldx + k];
    }
  }
  store<WR, XR>(a, acc, tail, o, r);
}

template <int WR, int XR>
LS_AVX2 inline void tile_bf16(const RowsArgs& a, int64_t o, int64_t r) {
  const uint16_t* w = static_cast<const uint16_t*>(a.w) + o * a.ldw;
  const float* x = static_cast<const float*>(a.x) + r * a.ldx;
  const __m256i high = _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u));
  __m256 acc[WR][XR];
  float tail[WR][XR] = {};
#pragma GCC unroll 4
  for (int i = 0; i < WR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 32 <= a.in; k += 32) {
    // Half h holds elements k + 16h .. k + 16h + 15: its evens match x[k + 8h ..], its odds
    // x[k + 16 + 8h ..] in the reordered input.
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256 even[WR], odd[WR];
#pragma GCC unroll 4
      for (int i = 0; i < WR; ++i) {
        const __m256i v =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i * a.ldw + k + 16 * h));
        even[i] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        odd[i] = _mm256_castsi256_ps(_mm256_and_si256(v, high));
      }
#pragma GCC unroll 4
      for (int j = 0; j < XR; ++j) {
        const __m256 xe = _mm256_loadu_ps(x + j * a.ldx + k + 8 * h);
        const __m256 xo = _mm256_loadu_ps(x + j * a.ldx + k + 16 + 8 * h);
#pragma GCC unroll 4
        for (int i = 0; i < WR; ++i) {
          acc[i][j] = _mm256_fmadd_ps(even[i], xe, acc[i][j]);
          acc[i][j] = _mm256_fmadd_ps(odd[i], xo, acc[i][j]);
        }
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

template <int WR, int XR>
LS_AVX2 inline void tile_i8(const RowsArgs& a, int64_t o, int64_t r) {
  const int8_t* w = static_cast<const int8_t*>(a.w) + o * a.ldw;
  const float* s = a.scales + o * a.lds;
  const float* x = static_cast<const float*>(a.x) + r * a.ldx;
  __m256 acc[WR][XR];
  float tail[WR][XR] = {};
#pragma GCC unroll 4
  for (int i = 0; i < WR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 8 <= a.in; k += 8) {
    __m256 wv[WR];
#pragma GCC unroll 4
    for (int i = 0; i < WR; ++i) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + i * a.ldw + k));
      wv[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)),
                            _mm256_set1_ps(s[i * a.lds + k / kI8GroupSize]));
    }
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) {
      const __m256 xv = _mm256_loadu_ps(x + j * a.ldx + k);
#pragma GCC unroll 4
      for (int i = 0; i < WR; ++i) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  for (; k < a.in; ++k) {
    for (int i = 0; i < WR; ++i) {
      const float wk = static_cast<float>(w[i * a.ldw + k]) * s[i * a.lds + k / kI8GroupSize];
      for (int j = 0; j < XR; ++j) tail[i][j] += wk * x[j * a.ldx + k];
    }
  }
  store<WR, XR>(a, acc, tail, o, r);
}

// Kind 0: F32, 1: BF16, 2: I8.
template <int Kind, int WR, int XR>
LS_AVX2 inline void tile(const RowsArgs& a, int64_t o, int64_t r) {
  if constexpr (Kind == 0) {
    tile_f32<WR, XR>(a, o, r);
  } else if constexpr (Kind == 1) {
    tile_bf16<WR, XR>(a, o, r);
  } else {
    tile_i8<WR, XR>(a, o, r);
  }
}

// Every input row for WR weight rows at o: tiles of 4 rows, then the 1-3 left.
template <int Kind, int WR>
LS_AVX2 void all_rows(const RowsArgs& a, int64_t o) {
  int64_t r = 0;
  for (; r + 4 <= a.n; r += 4) tile<Kind, WR, 4>(a, o, r);
  switch (a.n - r) {
    case 3:
      tile<Kind, WR, 3>(a, o, r);
      break;
    case 2:
      tile<Kind, WR, 2>(a, o, r);
      break;
    case 1:
      tile<Kind, WR, 1>(a, o, r);
      break;
    default:
      break;
  }
}

template <int Kind, int WR>
LS_AVX2 void columns(const RowsArgs& a, int64_t o0, int64_t o1) {
  int64_t o = o0;
  for (; o + WR <= o1; o += WR) all_rows<Kind, WR>(a, o);
  for (; o < o1; ++o) all_rows<Kind, 1>(a, o);
}

}  // namespace

void rows_f32_avx2(const RowsArgs& a, int64_t o0, int64_t o1) { columns<0, 3>(a, o0, o1); }
void rows_bf16_avx2(const RowsArgs& a, int64_t o0, int64_t o1) { columns<1, 2>(a, o0, o1); }
void rows_i8_avx2(const RowsArgs& a, int64_t o0, int64_t o1) { columns<2, 3>(a, o0, o1); }

#else

// Never chosen off x86-64 (kernel_level() is portable there); the portable kernels stand in.
void rows_f32_avx2(const RowsArgs& a, int64_t o0, int64_t o1) { rows_f32_portable(a, o0, o1); }
void rows_bf16_avx2(const RowsArgs& a, int64_t o0, int64_t o1) { rows_bf16_portable(a, o0, o1); }
void rows_i8_avx2(const RowsArgs& a, int64_t o0, int64_t o1) { rows_i8_portable(a, o0, o1); }

#endif

}  // namespace loraserve::kernels::cpu
