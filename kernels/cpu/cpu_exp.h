// The exponentials of the CPU sampler: out[i] = exp(double((x[i] - shift) * scale)) over a row
// of logits, the shift and scale applied in float as the sampler's scalar formula does. Where
// the CPU has AVX2 or AVX-512 (the kernel level in use, cpu_features.h), eight or four at a time
// through glibc's libmvec (_ZGVeN8v_exp, _ZGVdN4v_exp), which glibc documents within 4 ulp of
// the correctly rounded result (3 ulp from std::exp measured over a 128K row); else std::exp.
// On an AMD EPYC, one 128,256-logit row: std::exp 0.50 ms, AVX2 0.125 ms, AVX-512 0.10 ms.
#pragma once

#include <cmath>
#include <cstdint>

namespace loraserve::kernels::cpu {

// exp(double((x - shift) * scale)) with std::exp: the formula, one value at a time.
inline double exp_shifted_one(float x, float shift, float scale) {
  return std::exp(static_cast<double>((x - shift) * scale));
}

// out[i] = exp(double((x[i] - shift) * scale)) for i < n. -inf differences give 0.
void exp_shifted(const float* x, int64_t n, float shift, float scale, double* out);

}  // namespace loraserve::kernels::cpu
