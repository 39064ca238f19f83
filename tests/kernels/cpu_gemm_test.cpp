// cpu::lora_gemm (LoRA's products, A and B in F32 or BF16) against a float64 loop on shapes that
// take each of its default paths: one row, few rows (the small-row kernels and their tile edges),
// a short shared dimension (OpenBLAS), many rows, a shared dimension that is not a multiple of 8,
// row strides wider than the rows, beta 0 (y holds garbage that must be ignored) and 1
// (accumulate); on one thread and on all. cpu_matmul_test runs every path for every weight dtype.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_features.h"

namespace loraserve::kernels {
namespace {

struct Shape {
  int64_t n, out, in;
};

void check(const Shape& s, DType dtype, float beta, int threads) {
  std::mt19937 rng(static_cast<uint32_t>(s.n * 1000003 + s.out * 1009 + s.in));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t ldx = s.in + 3, ldw = s.in + 5, ldy = s.out + 7;
  std::vector<float> x(static_cast<size_t>(s.n * ldx)), w(static_cast<size_t>(s.out * ldw));
  std::vector<float> y(static_cast<size_t>(s.n * ldy));
  for (auto& v : x) v = u(rng);
  for (auto& v : w) v = dtype == DType::kBF16 ? bf16_to_f32(f32_to_bf16(u(rng))) : u(rng);
  // w in its dtype (the BF16 copy holds exactly the rounded values above).
  std::vector<uint16_t> w16(w.size());
  for (size_t i = 0; i < w.size(); ++i) w16[i] = f32_to_bf16(w[i]);
  Tensor wt = Tensor::make(dtype == DType::kBF16 ? static_cast<void*>(w16.data()) : w.data(), dtype,
                           s.out, s.in);
  wt.stride = ldw;
  for (auto& v : y) v = beta == 0.0f ? NAN : u(rng);
  const std::vector<float> y0 = y;
  omp_set_num_threads(threads);
  cpu::lora_gemm(s.n, x.data(), ldx, wt, beta, y.data(), ldy);
  for (int64_t r = 0; r < s.n; ++r) {
    for (int64_t o = 0; o < s.out; ++o) {
      double want = beta == 0.0f ? 0.0 : beta * static_cast<double>(y0[r * ldy + o]);
      double mag = 0.0;
      for (int64_t k = 0; k < s.in; ++k) {
        want += static_cast<double>(x[r * ldx + k]) * w[o * ldw + k];
        mag += std::fabs(static_cast<double>(x[r * ldx + k]) * w[o * ldw + k]);
      }
      ASSERT_NEAR(y[r * ldy + o], want, 1e-5 * (mag + 1.0))
          << dtype_name(dtype) << " n " << s.n << " out " << s.out << " in " << s.in << " beta "
          << beta << " threads " << threads << " at row " << r << " col " << o;
    }
    // Columns past `out` in the stride are not touched.
    for (int64_t o = s.out; o < ldy; ++o) {
      const float before = y0[r * ldy + o], after = y[r * ldy + o];
      ASSERT_TRUE(before == after || (std::isnan(before) && std::isnan(after)));
    }
  }
}

TEST(CpuGemmTest, MatchesFloat64OnEveryPath) {
  std::printf("kernel level: %s; BLAS: %s\n",
              std::string(cpu::kernel_level_name(cpu::kernel_level())).c_str(),
              cpu::gemm_uses_blas() ? "yes" : "no");
  const std::vector<Shape> shapes = {{1, 1, 1},     {1, 37, 100},  {2, 3, 8},       {3, 5, 9},
                                     {4, 6, 16},    {5, 7, 7},     {7, 100, 63},    {8, 129, 200},
                                     {13, 64, 33},  {31, 95, 130}, {32, 300, 257},  {33, 40, 64},
                                     {64, 50, 100}, {5, 4096, 48}, {32, 2000, 1024}};
  for (const Shape& s : shapes) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (float beta : {0.0f, 1.0f}) {
        for (int threads : {1, 2}) check(s, dtype, beta, threads);
      }
    }
  }
}

}  // namespace
}  // namespace loraserve::kernels
