// cpu::gemm (the f32 entry LoRA uses) against a float64 loop on shapes that take each of its
// default paths: one row, few rows (the small-row kernels and their tile edges), a short shared
// dimension (OpenBLAS), many rows, a shared dimension that is not a multiple of 8, row strides
// wider than the rows, beta 0 (y holds garbage that must be ignored) and 1 (accumulate); on one
// thread and on all. cpu_matmul_test runs every path for every weight dtype.
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

void check(const Shape& s, float beta, int threads) {
  std::mt19937 rng(static_cast<uint32_t>(s.n * 1000003 + s.out * 1009 + s.in));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t ldx = s.in + 3, ldw = s.in + 5, ldy = s.out + 7;
  std::vector<float> x(static_cast<size_t>(s.n * ldx)), w(static_cast<size_t>(s.out * ldw));
  std::vector<float> y(static_cast<size_t>(s.n * ldy));
  for (auto& v : x) v = u(rng);
  for (auto& v : w) v = u(rng);
  for (auto& v : y) v = beta == 0.0f ? NAN : u(rng);
  const std::vector<float> y0 = y;
  omp_set_num_threads(threads);
  cpu::gemm(s.n, s.out, s.in, x.data(), ldx, w.data(), ldw, beta, y.data(), ldy);
  for (int64_t r = 0; r < s.n; ++r) {
    for (int64_t o = 0; o < s.out; ++o) {
      double want = beta == 0.0f ? 0.0 : beta * static_cast<double>(y0[r * ldy + o]);
      double mag = 0.0;
      for (int64_t k = 0; k < s.in; ++k) {
        want += static_cast<double>(x[r * ldx + k]) * w[o * ldw + k];
        mag += std::fabs(static_cast<double>(x[r * ldx + k]) * w[o * ldw + k]);
      }
      ASSERT_NEAR(y[r * ldy + o], want, 1e-5 * (mag + 1.0))
          << "n " << s.n << " out " << s.out << " in " << s.in << " beta " << beta << " threads "
          << threads << " at row " << r << " col " << o;
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
    for (float beta : {0.0f, 1.0f}) {
      for (int threads : {1, 2}) check(s, beta, threads);
    }
  }
}

}  // namespace
}  // namespace loraserve::kernels
