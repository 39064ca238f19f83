#include "kernels/cpu/cpu_exp.h"

#include "kernels/cpu/cpu_features.h"

#if defined(__x86_64__)
#include <immintrin.h>

// glibc's libmvec (x86-64 vector ABI names): exp of 8 doubles with AVX-512, of 4 with AVX2.
// Declared with the instruction sets their vector arguments are passed in.
extern "C" __attribute__((target("avx512f"))) __m512d _ZGVeN8v_exp(__m512d);
extern "C" __attribute__((target("avx2"))) __m256d _ZGVdN4v_exp(__m256d);
#endif

namespace loraserve::kernels::cpu {
namespace {

void exp_shifted_portable(const float* x, int64_t n, float shift, float scale, double* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = exp_shifted_one(x[i], shift, scale);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) void exp_shifted_avx512(const float* x, int64_t n, float shift,
                                                           float scale, double* out) {
  const __m256 s = _mm256_set1_ps(shift), k = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), s), k);
    // The zero-masked form: GCC 12 warns of the plain one's undefined source operand.
    _mm512_storeu_pd(out + i, _ZGVeN8v_exp(_mm512_maskz_cvtps_pd(0xff, d)));
  }
  exp_shifted_portable(x + i, n - i, shift, scale, out + i);
}

__attribute__((target("avx2,fma"))) void exp_shifted_avx2(const float* x, int64_t n, float shift,
                                                          float scale, double* out) {
  const __m128 s = _mm_set1_ps(shift), k = _mm_set1_ps(scale);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128 d = _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(x + i), s), k);
    _mm256_storeu_pd(out + i, _ZGVdN4v_exp(_mm256_cvtps_pd(d)));
  }
  exp_shifted_portable(x + i, n - i, shift, scale, out + i);
}
#endif

}  // namespace

void exp_shifted(const float* x, int64_t n, float shift, float scale, double* out) {
#if defined(__x86_64__)
  switch (kernel_level()) {
    case KernelLevel::kAvx512:
    case KernelLevel::kAvx512Bf16:
      return exp_shifted_avx512(x, n, shift, scale, out);
    case KernelLevel::kAvx2:
      return exp_shifted_avx2(x, n, shift, scale, out);
    case KernelLevel::kPortable:
      break;
  }
#endif
  exp_shifted_portable(x, n, shift, scale, out);
}

}  // namespace loraserve::kernels::cpu
