// Every matmul path of the CPU backend that runs on this machine (own kernels at each instruction
// set up to this CPU's, OpenBLAS, oneDNN), for F32, BF16 and I8 weights, against a float64 product
// of the weights as stored (bf16 values, int8 integers times their scales): one row, few rows
// and their tile edges, more than 32 rows (chunks), shared dimensions that are not a multiple of
// a vector or of an int8 group, strided x / w / y, beta 0 (y holds NaN that must be ignored) and
// 1, one thread and two. Paths that round x to bf16 are held to the bound that rounding implies;
// the others to f32 summation error. Also the weight conversions (bf16 rounding, int8 groups).
#include "kernels/cpu/cpu_matmul.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/cpu_rows.h"

namespace loraserve::kernels {
namespace {

using cpu::MatmulPath;

struct Shape {
  int64_t n, out, in;
};

constexpr MatmulPath kPaths[] = {MatmulPath::kRowsPortable, MatmulPath::kRowsAvx2,
                                 MatmulPath::kRowsAvx512,   MatmulPath::kRowsBf16Dot,
                                 MatmulPath::kRowsI8Vnni,   MatmulPath::kBlas,
                                 MatmulPath::kOneDnn};

// Whether `path` multiplies x rounded to bf16 (and, for I8, weights rounded to bf16).
bool rounds_to_bf16(MatmulPath path, DType dtype) {
  return path == MatmulPath::kRowsBf16Dot || (path == MatmulPath::kOneDnn && dtype != DType::kF32);
}

// A weight (out, in) of `dtype` with row stride in + 5, filled from random f32 values, and its
// stored values read back as doubles.
struct Weights {
  std::vector<char> storage;
  Tensor view;
  std::vector<double> values;  // (out, in)
};

Weights make_weights(DType dtype, int64_t out, int64_t in, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t ldw = in + 5;
  Weights w;
  w.storage.resize(weight_storage_bytes(dtype, out, ldw) + 64);
  void* base = w.storage.data() + (64 - reinterpret_cast<uintptr_t>(w.storage.data()) % 64) % 64;
  const Tensor whole = weight_view(base, dtype, out, ldw);
  std::vector<float> src(static_cast<size_t>(out * ldw));
  for (auto& v : src) v = u(rng);
  EXPECT_TRUE(cpu::convert_weights(whole, src.data(), DType::kF32).ok());
  w.view = whole;
  w.view.cols = in;  // the stride stays ldw
  std::vector<float> row(static_cast<size_t>(ldw));
  for (int64_t o = 0; o < out; ++o) {
    cpu::widen_row(whole, o, row.data());
    for (int64_t k = 0; k < in; ++k) {
      double v = row[static_cast<size_t>(k)];
      if (dtype == DType::kI8) {  // the product q · s exactly, not its f32 rounding
        v = static_cast<double>(static_cast<const int8_t*>(whole.data)[o * ldw + k]) *
            whole.scales[o * whole.scale_stride() + k / kI8GroupSize];
      }
      w.values.push_back(v);
    }
  }
  return w;
}

// One problem: weights, x, and the float64 product x · wᵀ with the magnitudes Σ|x_k w_ok| and
// Σ|w_ok| · (the largest |x| of k's int8 group in x's row), which bounds the error of x in int16
// groups.
struct Problem {
  Shape shape;
  DType dtype;
  Weights w;
  int64_t ldx = 0, ldy = 0;
  std::vector<float> x;
  std::vector<double> product, magnitude, group_magnitude;  // (n, out)
};

Problem make_problem(DType dtype, const Shape& s) {
  std::mt19937 rng(static_cast<uint32_t>(s.n * 1000003 + s.out * 1009 + s.in));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Problem p{s, dtype, make_weights(dtype, s.out, s.in, rng), s.in + 3, s.out + 7, {}, {}, {}, {}};
  p.x.resize(static_cast<size_t>(s.n * p.ldx));
  for (auto& v : p.x) v = u(rng);
  // Small values beside large ones in some groups, so that int16 groups lose the small ones' bits.
  for (size_t i = 0; i < p.x.size(); i += 3) p.x[i] *= 1e-3f;
  for (int64_t r = 0; r < s.n; ++r) {
    std::vector<double> largest(static_cast<size_t>(s.in / kI8GroupSize + 1), 0.0);
    for (int64_t k = 0; k < s.in; ++k) {
      double& l = largest[static_cast<size_t>(k / kI8GroupSize)];
      l = std::max(l, std::fabs(static_cast<double>(p.x[r * p.ldx + k])));
    }
    for (int64_t o = 0; o < s.out; ++o) {
      double sum = 0.0, mag = 0.0, group_mag = 0.0;
      for (int64_t k = 0; k < s.in; ++k) {
        const double wk = p.w.values[o * s.in + k];
        const double t = static_cast<double>(p.x[r * p.ldx + k]) * wk;
        sum += t;
        mag += std::fabs(t);
        group_mag += std::fabs(wk) * largest[static_cast<size_t>(k / kI8GroupSize)];
      }
      p.product.push_back(sum);
      p.magnitude.push_back(mag);
      p.group_magnitude.push_back(group_mag);
    }
  }
  return p;
}

void check(MatmulPath path, const Problem& p, float beta, int threads) {
  const Shape& s = p.shape;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> y(static_cast<size_t>(s.n * p.ldy));
  for (auto& v : y) v = beta == 0.0f ? NAN : u(rng);
  const std::vector<float> y0 = y;
  omp_set_num_threads(threads);
  const Status status =
      cpu::matmul_via(path, s.n, p.x.data(), p.ldx, p.w.view, beta, y.data(), p.ldy);
  ASSERT_TRUE(status.ok()) << status.to_string();
  // f32 sums: a few ulps per term at most; bf16 inputs: each x (and an I8 weight widened to bf16)
  // within half an ulp of bf16, 2^-8 relative, so each product within 2^-8 of its magnitude
  // (2^-7 when the I8 weight is rounded too).
  // x in int16 groups: each x within half a step (its group's largest |x| / 32767) of its value,
  // and 32767 · 2^-23 of a step more for the f32 product x · (32767 / largest) that is rounded.
  const double rounded = p.dtype == DType::kI8 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -8);
  const double relative = rounds_to_bf16(path, p.dtype) ? rounded + 1e-5 : 1e-5;
  const double group_relative = path == MatmulPath::kRowsI8Vnni ? 0.505 / 32767 : 0.0;
  for (int64_t r = 0; r < s.n; ++r) {
    for (int64_t o = 0; o < s.out; ++o) {
      const size_t i = static_cast<size_t>(r * s.out + o);
      const double want =
          p.product[i] + (beta == 0.0f ? 0.0 : beta * static_cast<double>(y0[r * p.ldy + o]));
      ASSERT_NEAR(y[r * p.ldy + o], want,
                  relative * p.magnitude[i] + group_relative * p.group_magnitude[i] + 1e-6)
          << cpu::matmul_path_name(path) << " " << dtype_name(p.dtype) << " n " << s.n << " out "
          << s.out << " in " << s.in << " beta " << beta << " threads " << threads << " at row "
          << r << " col " << o;
    }
    for (int64_t o = s.out; o < p.ldy; ++o) {  // columns past `out` are not touched
      const float before = y0[r * p.ldy + o], after = y[r * p.ldy + o];
      ASSERT_TRUE(before == after || (std::isnan(before) && std::isnan(after)));
    }
  }
}

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {
      {1, 1, 1},     {1, 37, 100},  {1, 70, 300},  {2, 3, 8},     {3, 5, 9},        {4, 6, 16},
      {5, 7, 7},     {7, 100, 63},  {8, 129, 200}, {13, 64, 33},  {31, 95, 130},    {32, 300, 257},
      {33, 40, 64},  {64, 50, 100}, {5, 4096, 48}, {70, 33, 129}, {32, 2000, 1024}, {1, 19, 512},
      {1, 33, 1100}, {2, 21, 1100}, {2, 9, 130}};
  return s;
}

// The problems of every shape for every weight dtype, made once.
const std::vector<Problem>& problems() {
  static const std::vector<Problem> all = [] {
    std::vector<Problem> out;
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
      for (const Shape& s : shapes()) out.push_back(make_problem(dtype, s));
    }
    return out;
  }();
  return all;
}

TEST(CpuMatmulTest, EveryPathThisCpuRunsMatchesFloat64) {
  std::printf("CPU: %s; best kernel level %s\n", cpu::describe_cpu_features().c_str(),
              std::string(cpu::kernel_level_name(cpu::best_kernel_level())).c_str());
  int runs = 0;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
    for (MatmulPath path : kPaths) {
      if (!cpu::matmul_path_available(path, dtype)) {
        std::printf("  %-20s %-4s: not on this CPU / build\n",
                    std::string(cpu::matmul_path_name(path)).c_str(),
                    std::string(dtype_name(dtype)).c_str());
        continue;
      }
      for (const Problem& p : problems()) {
        if (p.dtype != dtype) continue;
        for (float beta : {0.0f, 1.0f}) {
          for (int threads : {1, 2}) check(path, p, beta, threads);
        }
      }
      ++runs;
      std::printf("  %-20s %-4s: checked\n", std::string(cpu::matmul_path_name(path)).c_str(),
                  std::string(dtype_name(dtype)).c_str());
    }
  }
  EXPECT_GE(runs, 3);  // the portable kernels always run
}

TEST(CpuMatmulTest, DefaultChoiceAtEveryKernelLevelThisCpuHas) {
  const cpu::KernelLevel best = cpu::best_kernel_level();
  for (int l = 0; l <= static_cast<int>(best); ++l) {
    const auto level = static_cast<cpu::KernelLevel>(l);
    cpu::cap_kernel_level(level);
    EXPECT_EQ(cpu::kernel_level(), level);
    for (const Problem& p : problems()) {
      const MatmulPath path = cpu::choose_matmul_path(p.shape.n, p.shape.in, p.dtype);
      ASSERT_TRUE(cpu::matmul_path_available(path, p.dtype))
          << cpu::matmul_path_name(path) << " at " << cpu::kernel_level_name(level);
      check(path, p, 1.0f, 2);
    }
  }
  cpu::cap_kernel_level(best);
  EXPECT_EQ(cpu::kernel_level(), best);
}

// A NaN or an infinity in a row of x makes that row's outputs non-finite on every path (none of
// them may hide it, e.g. by rounding it into an int16 group), and leaves the other rows alone.
TEST(CpuMatmulTest, NonFiniteInputsStayNonFiniteOnEveryPath) {
  constexpr int64_t n = 3, out = 40, in = 200;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
    const Weights w = make_weights(dtype, out, in, rng);
    std::vector<float> x(static_cast<size_t>(n * in));
    for (auto& v : x) v = u(rng);
    x[70] = NAN;                                         // row 0, second group
    x[in + 5] = std::numeric_limits<float>::infinity();  // row 1, first group
    for (MatmulPath path : kPaths) {
      if (!cpu::matmul_path_available(path, dtype)) continue;
      std::vector<float> y(static_cast<size_t>(n * out), 0.0f);
      ASSERT_TRUE(cpu::matmul_via(path, n, x.data(), in, w.view, 0.0f, y.data(), out).ok());
      for (int64_t o = 0; o < out; ++o) {
        const std::string where = std::string(cpu::matmul_path_name(path)) + " " +
                                  std::string(dtype_name(dtype)) + " col " + std::to_string(o);
        EXPECT_TRUE(std::isnan(y[o])) << where;
        EXPECT_FALSE(std::isfinite(y[out + o])) << where;
        // One +Inf in the row: ±Inf, not NaN (the split must not make Inf − Inf of it), except
        // where int16 groups make a group with ±Inf NaN, as documented.
        if (path != MatmulPath::kRowsI8Vnni && w.values[static_cast<size_t>(o * in + 5)] != 0.0) {
          EXPECT_TRUE(std::isinf(y[out + o])) << where;
        }
        EXPECT_TRUE(std::isfinite(y[2 * out + o])) << where;
      }
    }
  }
}

// x as the VNNI kernel takes it (RowsInput::kI16Groups), group by group: every value within half a
// step (plus the f32 rounding of x · 32767 / largest) of its integer times the group's scale, the
// largest at ±32767, the step largest / 32767; a group of subnormal x takes the step 2^-126 (a
// subnormal step would keep only a few bits); all-zero groups (scale 0) and groups with a NaN or
// ±Inf (scale NaN) included; the integers past `in` zero.
TEST(CpuMatmulTest, Int16GroupsOfXAreWithinHalfAStep) {
  if (!cpu::matmul_path_available(MatmulPath::kRowsI8Vnni, DType::kI8)) {
    GTEST_SKIP() << "no AVX512_VNNI here";
  }
  constexpr int64_t n = 2, in = 5 * kI8GroupSize + 7;  // 6 groups, the last of 7
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * in));
  for (auto& v : x) v = u(rng);
  for (int64_t k = 0; k < kI8GroupSize; ++k) x[static_cast<size_t>(kI8GroupSize + k)] *= 1e-40f;
  for (int64_t k = 0; k < kI8GroupSize; ++k) x[static_cast<size_t>(2 * kI8GroupSize + k)] = 0.0f;
  x[static_cast<size_t>(3 * kI8GroupSize + 9)] = NAN;
  x[static_cast<size_t>(in + 4 * kI8GroupSize)] = -std::numeric_limits<float>::infinity();
  std::vector<char> out(
      static_cast<size_t>(cpu::prepared_rows_bytes(cpu::RowsInput::kI16Groups, n, in)));
  cpu::prepare_rows(cpu::RowsInput::kI16Groups, n, in, x.data(), in, out.data());
  const auto* q = reinterpret_cast<const int16_t*>(out.data());
  const auto* scales = reinterpret_cast<const float*>(out.data() + cpu::i16_scales_offset(n, in));
  const int64_t elems = cpu::i16_row_elems(in), groups = cpu::i16_row_groups(in);
  ASSERT_EQ(groups, 6);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const float scale = scales[r * groups + g];
      const int64_t k0 = g * kI8GroupSize, k1 = std::min(in, k0 + kI8GroupSize);
      double largest = 0.0;
      bool finite = true;
      for (int64_t k = k0; k < k1; ++k) {
        finite = finite && std::isfinite(x[static_cast<size_t>(r * in + k)]);
        largest =
            std::max(largest, std::fabs(static_cast<double>(x[static_cast<size_t>(r * in + k)])));
      }
      const std::string where = "row " + std::to_string(r) + " group " + std::to_string(g);
      if (!finite) {
        EXPECT_TRUE(std::isnan(scale)) << where;
        continue;
      }
      if (largest == 0.0) {
        EXPECT_EQ(scale, 0.0f) << where;
        continue;
      }
      const bool tiny = largest < 32767 * std::ldexp(1.0, -126);
      const double step = tiny ? std::ldexp(1.0, -126) : largest / 32767;
      EXPECT_NEAR(scale, step, step * 1e-7) << where;
      int peak = 0;
      for (int64_t k = k0; k < k1; ++k) {
        const int16_t qk = q[r * elems + k];
        peak = std::max(peak, std::abs(static_cast<int>(qk)));
        const double back = static_cast<double>(qk) * scale;
        EXPECT_NEAR(back, x[static_cast<size_t>(r * in + k)], 0.505 * step) << where;
      }
      if (!tiny) {
        EXPECT_EQ(peak, 32767) << where;
      }
    }
    for (int64_t k = in; k < elems; ++k)
      EXPECT_EQ(q[r * elems + k], 0) << "row " << r << " pad " << k;
  }
}

TEST(CpuMatmulTest, PathsAboveThisCpuAreRefused) {
  std::vector<float> x(4), y(4);
  std::vector<float> wv(4, 1.0f);
  const Tensor w = Tensor::make(wv.data(), DType::kF32, 2, 2);
  cpu::cap_kernel_level(cpu::KernelLevel::kPortable);
  EXPECT_FALSE(cpu::matmul_path_available(MatmulPath::kRowsAvx2, DType::kF32));
  EXPECT_FALSE(cpu::matmul_via(MatmulPath::kRowsAvx512, 2, x.data(), 2, w, 0.0f, y.data(), 2).ok());
  cpu::cap_kernel_level(cpu::best_kernel_level());
  EXPECT_FALSE(cpu::matmul_path_available(MatmulPath::kRowsBf16Dot, DType::kF32));
  EXPECT_FALSE(cpu::matmul_path_available(MatmulPath::kRowsBf16Dot, DType::kI8));
  EXPECT_FALSE(cpu::matmul_path_available(MatmulPath::kRowsI8Vnni, DType::kF32));
  EXPECT_FALSE(cpu::matmul_path_available(MatmulPath::kRowsI8Vnni, DType::kBF16));
}

TEST(CpuWeightConversionTest, Int8GroupsAreSymmetricAndWithinHalfAStep) {
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 0.05f);
  const int64_t n = 3 * kI8GroupSize + 17;  // a short last group
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = g(rng);
  v[5] = 0.9f;  // an outlier spoils only its own group
  std::vector<int8_t> q(static_cast<size_t>(n));
  std::vector<float> scales(4);
  cpu::quantize_i8_row(v.data(), n, q.data(), scales.data());
  for (int64_t grp = 0; grp < 4; ++grp) {
    float max_abs = 0;
    for (int64_t k = grp * kI8GroupSize; k < std::min(n, (grp + 1) * kI8GroupSize); ++k)
      max_abs = std::max(max_abs, std::fabs(v[static_cast<size_t>(k)]));
    EXPECT_FLOAT_EQ(scales[static_cast<size_t>(grp)], max_abs / 127.0f) << grp;
  }
  EXPECT_GT(scales[0], 5 * scales[1]);
  for (int64_t k = 0; k < n; ++k) {
    const double s = scales[static_cast<size_t>(k / kI8GroupSize)];
    EXPECT_LE(std::fabs(q[static_cast<size_t>(k)] * s - v[static_cast<size_t>(k)]), s / 2 * 1.0001)
        << k;
  }
  EXPECT_EQ(q[5], 127);

  std::vector<float> zeros(static_cast<size_t>(kI8GroupSize), 0.0f);
  cpu::quantize_i8_row(zeros.data(), kI8GroupSize, q.data(), scales.data());
  EXPECT_EQ(scales[0], 0.0f);
  EXPECT_EQ(q[0], 0);
  zeros[3] = NAN;
  cpu::quantize_i8_row(zeros.data(), kI8GroupSize, q.data(), scales.data());
  EXPECT_TRUE(std::isnan(scales[0]));
}

TEST(CpuWeightConversionTest, BackendKeepsWeightsInTheChosenDtype) {
  const std::vector<float> src = {1.0f, 1.00390625f, -3.14159265f, 65504.0f, 1e-3f, -0.0f};
  auto backend = create_cpu_backend(1, DType::kBF16);
  EXPECT_EQ(backend->weight_dtype(DType::kF32), DType::kBF16);
  EXPECT_NE(backend->weight_dtype_reason(DType::kF32).find("--weights-dtype"), std::string::npos);
  auto buf = backend->allocate(weight_storage_bytes(DType::kBF16, 2, 3));
  ASSERT_TRUE(buf.ok());
  const Tensor t = weight_view(buf->data(), DType::kBF16, 2, 3);
  ASSERT_TRUE(backend->copy_to_device(t, src.data(), DType::kF32, src.size()).ok());
  std::vector<float> back(6);
  ASSERT_TRUE(backend->copy_to_host(t, back.data()).ok());
  for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(back[i], bf16_to_f32(f32_to_bf16(src[i])));
  EXPECT_EQ(back[1], 1.0f);  // 1 + 2^-8 is halfway: rounds to even

  auto i8 = create_cpu_backend(1, DType::kI8);
  auto qbuf = i8->allocate(weight_storage_bytes(DType::kI8, 2, 3));
  ASSERT_TRUE(qbuf.ok());
  const Tensor q = weight_view(qbuf->data(), DType::kI8, 2, 3);
  ASSERT_NE(q.scales, nullptr);
  ASSERT_TRUE(i8->copy_to_device(q, src.data(), DType::kF32, src.size()).ok());
  ASSERT_TRUE(i8->copy_to_host(q, back.data()).ok());
  EXPECT_NEAR(back[2], src[2], 3.14159265 / 254 * 1.0001);
  EXPECT_EQ(back[3], 65504.0f);
  Tensor no_scales = q;
  no_scales.scales = nullptr;
  EXPECT_FALSE(i8->copy_to_device(no_scales, src.data(), DType::kF32, src.size()).ok());

  // auto: bf16 only for 16-bit checkpoints on CPUs that multiply bf16 natively.
  auto automatic = create_cpu_backend(1);
  EXPECT_EQ(automatic->weight_dtype(DType::kF32), DType::kF32);
  const bool native = cpu::cpu_features().avx512_bf16 || cpu::cpu_features().amx_bf16;
  for (DType ckpt : {DType::kBF16, DType::kF16}) {
    EXPECT_EQ(automatic->weight_dtype(ckpt), native ? DType::kBF16 : DType::kF32);
    EXPECT_NE(automatic->weight_dtype_reason(ckpt).find("auto"), std::string::npos);
  }
}

TEST(CpuWeightConversionTest, WeightsDtypeFlagValues) {
  EXPECT_FALSE(parse_weights_dtype_flag("auto")->has_value());
  EXPECT_EQ(parse_weights_dtype_flag("f32")->value(), DType::kF32);
  EXPECT_EQ(parse_weights_dtype_flag("bf16")->value(), DType::kBF16);
  EXPECT_EQ(parse_weights_dtype_flag("int8")->value(), DType::kI8);
  const auto bad = parse_weights_dtype_flag("fp8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--weights-dtype"), std::string::npos);
}

TEST(CpuWeightConversionTest, LoraDtypeFlagValuesAndWhatAutoKeeps) {
  EXPECT_FALSE(parse_lora_dtype_flag("auto")->has_value());
  EXPECT_EQ(parse_lora_dtype_flag("f32")->value(), DType::kF32);
  EXPECT_EQ(parse_lora_dtype_flag("bf16")->value(), DType::kBF16);
  const auto bad = parse_lora_dtype_flag("int8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--lora-dtype"), std::string::npos);
  // auto: a BF16 file stays BF16 (exact on every CPU: the kernels widen it); F32 and F16 files
  // (and files mixing dtypes, which reach the backend as F32) are held in F32.
  const auto automatic = create_cpu_backend(1);
  EXPECT_EQ(automatic->lora_dtype(DType::kBF16), DType::kBF16);
  EXPECT_EQ(automatic->lora_dtype(DType::kF32), DType::kF32);
  EXPECT_EQ(automatic->lora_dtype(DType::kF16), DType::kF32);
  for (DType want : {DType::kF32, DType::kBF16}) {
    const auto b = create_cpu_backend(1, std::nullopt, want);
    for (DType file : {DType::kF32, DType::kBF16, DType::kF16})
      EXPECT_EQ(b->lora_dtype(file), want);
  }
}

}  // namespace
}  // namespace loraserve::kernels
