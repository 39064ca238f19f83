// The CPU backend's GEMM for few rows (decode steps, LoRA segments): y = x·wᵀ with AVX2/FMA
// register tiles of 3 weight rows × 4 input rows, each dot product vectorized along the shared
// dimension. Unlike a BLAS sgemm it packs nothing, so w is streamed from memory once and every
// byte of it feeds 4 input rows from registers; at up to 32 rows this beats OpenBLAS on the
// machines measured (bench/engine_bench prints the GEMM times). Compiled for AVX2 and FMA
// through target attributes and chosen at run time; other CPUs take the general path.
#include <algorithm>
#include <cstdint>

#include "kernels/cpu/cpu_gemm_small.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LORASERVE_SMALL_GEMM 1
#endif

namespace loraserve::kernels::cpu {

#ifdef LORASERVE_SMALL_GEMM
namespace {

#define LS_AVX2 __attribute__((target("avx2,fma")))

LS_AVX2 inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[j][i] = Σ_k w[i][k]·x[j][k] (+ beta·y[j][i]) for WR rows of w and XR rows of x.
template <int WR, int XR>
LS_AVX2 inline void tile(int64_t in, const float* x, int64_t ldx, const float* w, int64_t ldw,
                         float beta, float* y, int64_t ldy) {
  __m256 acc[WR][XR];
#pragma GCC unroll 4
  for (int i = 0; i < WR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 8 <= in; k += 8) {
    __m256 wv[WR];
#pragma GCC unroll 4
    for (int i = 0; i < WR; ++i) wv[i] = _mm256_loadu_ps(w + i * ldw + k);
#pragma GCC unroll 4
    for (int j = 0; j < XR; ++j) {
      const __m256 xv = _mm256_loadu_ps(x + j * ldx + k);
#pragma GCC unroll 4
      for (int i = 0; i < WR; ++i) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  for (int i = 0; i < WR; ++i) {
    for (int j = 0; j < XR; ++j) {
      float s = horizontal_sum(acc[i][j]);
      for (int64_t t = k; t < in; ++t) s += w[i * ldw + t] * x[j * ldx + t];
      float* out = y + j * ldy + i;
      *out = beta == 0.0f ? s : s + beta * *out;
    }
  }
}

template <int WR>
LS_AVX2 void all_rows(int64_t n, int64_t in, const float* x, int64_t ldx, const float* w,
                      int64_t ldw, float beta, float* y, int64_t ldy) {
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) tile<WR, 4>(in, x + r * ldx, ldx, w, ldw, beta, y + r * ldy, ldy);
  switch (n - r) {
    case 3:
      tile<WR, 3>(in, x + r * ldx, ldx, w, ldw, beta, y + r * ldy, ldy);
      break;
    case 2:
      tile<WR, 2>(in, x + r * ldx, ldx, w, ldw, beta, y + r * ldy, ldy);
      break;
    case 1:
      tile<WR, 1>(in, x + r * ldx, ldx, w, ldw, beta, y + r * ldy, ldy);
      break;
    default:
      break;
  }
}

LS_AVX2 void slice_avx2(int64_t n, int64_t o0, int64_t o1, int64_t in, const float* x,
                        int64_t ldx, const float* w, int64_t ldw, float beta, float* y,
                        int64_t ldy) {
  int64_t o = o0;
  for (; o + 3 <= o1; o += 3) all_rows<3>(n, in, x, ldx, w + o * ldw, ldw, beta, y + o, ldy);
  for (; o < o1; ++o) all_rows<1>(n, in, x, ldx, w + o * ldw, ldw, beta, y + o, ldy);
}

}  // namespace

bool small_gemm_available() {
  static const bool available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return available;
}

void small_gemm_slice(int64_t n, int64_t o0, int64_t o1, int64_t in, const float* x, int64_t ldx,
                      const float* w, int64_t ldw, float beta, float* y, int64_t ldy) {
  slice_avx2(n, o0, o1, in, x, ldx, w, ldw, beta, y, ldy);
}

#else

bool small_gemm_available() { return false; }

void small_gemm_slice(int64_t, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                      int64_t, float, float*, int64_t) {}

#endif

}  // namespace loraserve::kernels::cpu
