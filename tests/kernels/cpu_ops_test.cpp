// Every op of the CPU backend against a plain double-precision loop: GEMM on strided views (the
// BLAS matrix-vector, matrix and threaded paths), norms, RoPE, KV writes, attention over a paged
// cache with grouped-query heads, SiLU·mul, and LoRA shrink/expand over segments of different
// ranks with rows that have no adapter.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace loraserve::kernels {
namespace {

// A two-thread CPU backend, the buffers a test allocates on it, and a seeded generator.
class CpuOpsTest : public ::testing::Test {
 protected:
  // A rows × cols view at column `offset` of a rows × stride buffer of random values.
  Tensor random_tensor(int64_t rows, int64_t cols, int64_t stride = 0, int64_t offset = 0,
                       float scale = 1.0f) {
    stride = std::max(stride, cols + offset);
    std::vector<float> values(static_cast<size_t>(rows * stride));
    for (auto& v : values) v = scale * dist_(rng_);
    auto buf = backend_->allocate(values.size() * 4);
    EXPECT_TRUE(buf.ok());
    const Tensor whole = buf->view(DType::kF32, rows, stride);
    EXPECT_TRUE(backend_->copy_to_device(whole, values.data(), DType::kF32, values.size()).ok());
    buffers_.push_back(std::move(*buf));
    return whole.col_slice(offset, cols);
  }

  // A contiguous copy of t in `dtype` (the values rounded to it).
  Tensor in_dtype(const Tensor& t, DType dtype) {
    if (dtype == DType::kF32) return t;
    std::vector<float> values(static_cast<size_t>(t.rows * t.cols));
    EXPECT_TRUE(backend_->copy_to_host(t, values.data()).ok());
    auto buf = backend_->allocate(values.size() * dtype_size(dtype));
    EXPECT_TRUE(buf.ok());
    const Tensor out = buf->view(dtype, t.rows, t.cols);
    EXPECT_TRUE(backend_->copy_to_device(out, values.data(), DType::kF32, values.size()).ok());
    buffers_.push_back(std::move(*buf));
    return out;
  }

  // The view's elements, row-major, as doubles.
  std::vector<double> read(const Tensor& t) {
    std::vector<float> out(static_cast<size_t>(t.rows * t.cols));
    EXPECT_TRUE(backend_->copy_to_host(t, out.data()).ok());
    return std::vector<double>(out.begin(), out.end());
  }

  static void expect_near(const std::vector<double>& got, const std::vector<double>& want,
                          double tolerance) {
    ASSERT_EQ(got.size(), want.size());
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
    EXPECT_LE(worst, tolerance);
  }

  std::unique_ptr<Backend> backend_ = create_cpu_backend(2);
  std::vector<DeviceBuffer> buffers_;
  std::mt19937 rng_{1234};
  std::uniform_real_distribution<float> dist_{-1.0f, 1.0f};
  StepMeta meta_;
};

// y (n, out) [+]= x (n, in) · w (out, in)ᵀ, in double.
std::vector<double> naive_matmul(const std::vector<double>& x, const std::vector<double>& w,
                                 int64_t n, int64_t out, int64_t in) {
  std::vector<double> y(static_cast<size_t>(n * out));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) y[r * out + o] += x[r * in + i] * w[o * in + i];
  return y;
}

TEST_F(CpuOpsTest, MatmulOnStridedViews) {
  // (rows, out, in): one row (matrix-vector), a few rows, and one large enough to use threads.
  for (auto [n, out, in] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 9, 7}, {5, 9, 7}, {64, 160, 64}}) {
    const Tensor x = random_tensor(n, in, in + 3, 2);
    const Tensor w = random_tensor(out, in);
    const Tensor y = random_tensor(n, out, out + 5, 1);
    const std::vector<double> before = read(y);
    const std::vector<double> product = naive_matmul(read(x), read(w), n, out, in);
    ASSERT_TRUE(backend_->matmul(x, w, y, /*accumulate=*/true).ok());
    std::vector<double> want = product;
    for (size_t i = 0; i < want.size(); ++i) want[i] += before[i];
    expect_near(read(y), want, 1e-5);
    ASSERT_TRUE(backend_->matmul(x, w, y, /*accumulate=*/false).ok());
    expect_near(read(y), product, 1e-5);
  }
  const Tensor x = random_tensor(2, 3), w = random_tensor(4, 5), y = random_tensor(2, 4);
  EXPECT_FALSE(backend_->matmul(x, w, y, false).ok());  // in 3 vs 5
}

TEST_F(CpuOpsTest, NormsAndBias) {
  const int64_t n = 3, d = 16;
  const float eps = 1e-5f;
  const Tensor x = random_tensor(n, d, d + 4, 4), w = random_tensor(1, d);
  const Tensor out = random_tensor(n, d), bias = random_tensor(1, d);
  const auto xv = read(x), wv = read(w), bv = read(bias);
  auto normed = [&](const std::vector<double>& v, int64_t r, int64_t width, int64_t off) {
    double ss = 0;
    for (int64_t i = 0; i < width; ++i) ss += v[r * d + off + i] * v[r * d + off + i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(width) + eps);
    std::vector<double> o(static_cast<size_t>(width));
    for (int64_t i = 0; i < width; ++i) o[i] = v[r * d + off + i] * inv;
    return o;
  };
  ASSERT_TRUE(backend_->rms_norm(x, w, eps, out).ok());
  std::vector<double> want;
  for (int64_t r = 0; r < n; ++r) {
    const auto o = normed(xv, r, d, 0);
    for (int64_t i = 0; i < d; ++i) want.push_back(wv[i] * o[i]);
  }
  expect_near(read(out), want, 1e-5);

  // residual += x, then out = norm(residual).
  const Tensor residual = random_tensor(n, d);
  std::vector<double> sum = read(residual);
  for (size_t i = 0; i < sum.size(); ++i) sum[i] += xv[i];
  ASSERT_TRUE(backend_->add_rms_norm(residual, x, w, eps, out).ok());
  expect_near(read(residual), sum, 1e-6);
  want.clear();
  for (int64_t r = 0; r < n; ++r) {
    const auto o = normed(sum, r, d, 0);
    for (int64_t i = 0; i < d; ++i) want.push_back(wv[i] * o[i]);
  }
  expect_near(read(out), want, 1e-5);

  // Per head of 4, in place on a column slice.
  const Tensor hw = random_tensor(1, 4);
  const auto hwv = read(hw);
  ASSERT_TRUE(backend_->head_rms_norm(x, 4, hw, eps).ok());
  want.clear();
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t h = 0; h < d / 4; ++h) {
      const auto o = normed(xv, r, 4, h * 4);
      for (int64_t i = 0; i < 4; ++i) want.push_back(hwv[i] * o[i]);
    }
  }
  expect_near(read(x), want, 1e-5);

  const auto before = read(out);
  ASSERT_TRUE(backend_->add_bias(out, bias).ok());
  want = before;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < d; ++i) want[r * d + i] += bv[i];
  expect_near(read(out), want, 1e-6);
}

TEST_F(CpuOpsTest, RopeRotatesHalvesAtEachRowsPosition) {
  const int64_t heads = 3, hd = 8, half = hd / 2;
  meta_.positions = {0, 7, 300};
  meta_.token_ids = {1, 2, 3};
  ASSERT_TRUE(backend_->begin_step(meta_).ok());
  const Tensor x = random_tensor(3, heads * hd, heads * hd + 8, 8);
  const Tensor freq = random_tensor(1, half);
  const auto xv = read(x), fv = read(freq);
  ASSERT_TRUE(backend_->rope(x, static_cast<int32_t>(hd), freq).ok());
  std::vector<double> want(xv.size());
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<float>(meta_.positions[r]) * static_cast<float>(fv[i]);
        const size_t a = static_cast<size_t>(r * heads * hd + h * hd + i);
        want[a] = xv[a] * std::cos(angle) - xv[a + half] * std::sin(angle);
        want[a + half] = xv[a + half] * std::cos(angle) + xv[a] * std::sin(angle);
      }
    }
  }
  expect_near(read(x), want, 1e-4);  // angles up to 300 rad in float
}

TEST_F(CpuOpsTest, PagedAttentionWithGroupedHeads) {
  const int32_t heads = 4, kv_heads = 2, hd = 8, bs = 4, num_blocks = 8;
  const int64_t kv_dim = kv_heads * hd;
  // Sequence 0 holds 7 tokens in blocks 5, 1; sequence 1 holds 10 in blocks 0, 3, 6.
  const std::vector<std::vector<int32_t>> tables = {{5, 1}, {0, 3, 6}};
  meta_.max_blocks_per_seq = 3;
  meta_.block_tables = {5, 1, -1, 0, 3, 6};
  meta_.positions = {5, 6, 9};  // two prefill rows of sequence 0, one decode row of sequence 1
  meta_.row_seq = {0, 0, 1};
  meta_.token_ids = {0, 0, 0};
  ASSERT_TRUE(backend_->begin_step(meta_).ok());
  const Tensor k_cache = random_tensor(num_blocks * bs, kv_dim);
  const Tensor v_cache = random_tensor(num_blocks * bs, kv_dim);
  const Tensor q = random_tensor(3, heads * hd, heads * hd + 2 * kv_dim, 0);
  const Tensor out = random_tensor(3, heads * hd);
  AttentionShape shape{heads, kv_heads, hd, bs, 1.0f / std::sqrt(static_cast<float>(hd))};
  ASSERT_TRUE(backend_->attention(q, k_cache, v_cache, shape, out).ok());

  const auto qv = read(q), kv = read(k_cache), vv = read(v_cache);
  std::vector<double> want;
  for (int64_t r = 0; r < 3; ++r) {
    const auto& table = tables[static_cast<size_t>(meta_.row_seq[r])];
    const int64_t ctx = meta_.positions[r] + 1;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t g = h / (heads / kv_heads);  // the key/value head this query head reads
      std::vector<double> p(static_cast<size_t>(ctx));
      double top = -INFINITY;
      for (int64_t t = 0; t < ctx; ++t) {
        const int64_t slot = table[t / bs] * bs + t % bs;
        double dot = 0;
        for (int64_t i = 0; i < hd; ++i)
          dot += qv[r * heads * hd + h * hd + i] * kv[slot * kv_dim + g * hd + i];
        p[t] = dot * shape.scale;
        top = std::max(top, p[t]);
      }
      double total = 0;
      for (auto& s : p) total += (s = std::exp(s - top));
      for (int64_t i = 0; i < hd; ++i) {
        double acc = 0;
        for (int64_t t = 0; t < ctx; ++t)
          acc += p[t] / total * vv[(table[t / bs] * bs + t % bs) * kv_dim + g * hd + i];
        want.push_back(acc);
      }
    }
  }
  expect_near(read(out), want, 1e-5);
}

TEST_F(CpuOpsTest, WriteKvPutsEachRowInItsSlot) {
  meta_.slot_mapping = {13, 2, 7};
  meta_.token_ids = {0, 0, 0};
  ASSERT_TRUE(backend_->begin_step(meta_).ok());
  const Tensor qkv = random_tensor(3, 12);
  const Tensor k = qkv.col_slice(4, 4), v = qkv.col_slice(8, 4);
  const Tensor k_cache = random_tensor(16, 4), v_cache = random_tensor(16, 4);
  ASSERT_TRUE(backend_->write_kv(k, v, k_cache, v_cache).ok());
  const auto kv = read(k), vv = read(v), kc = read(k_cache), vc = read(v_cache);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t i = 0; i < 4; ++i) {
      EXPECT_EQ(kc[meta_.slot_mapping[r] * 4 + i], kv[r * 4 + i]);
      EXPECT_EQ(vc[meta_.slot_mapping[r] * 4 + i], vv[r * 4 + i]);
    }
  }
  meta_.slot_mapping = {16, 2, 7};  // past the cache
  ASSERT_TRUE(backend_->begin_step(meta_).ok());
  EXPECT_FALSE(backend_->write_kv(k, v, k_cache, v_cache).ok());
}

TEST_F(CpuOpsTest, EmbeddingSiluMulAndGather) {
  meta_.token_ids = {3, 0, 3, 5};
  meta_.logits_rows = {3, 1};
  ASSERT_TRUE(backend_->begin_step(meta_).ok());
  const Tensor table = random_tensor(6, 5);
  const Tensor emb = random_tensor(4, 5);
  ASSERT_TRUE(backend_->embedding(table, emb).ok());
  const auto tv = read(table), ev = read(emb);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(ev[r * 5 + i], tv[meta_.token_ids[r] * 5 + i]);

  const Tensor gathered = random_tensor(2, 5);
  ASSERT_TRUE(backend_->gather_logits_rows(emb, gathered).ok());
  const auto gv = read(gathered);
  for (int64_t j = 0; j < 2; ++j)
    for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(gv[j * 5 + i], ev[meta_.logits_rows[j] * 5 + i]);

  const Tensor gate_up = random_tensor(4, 6, 6, 0, 4.0f), act = random_tensor(4, 3);
  ASSERT_TRUE(backend_->silu_mul(gate_up, act).ok());
  const auto gu = read(gate_up);
  std::vector<double> want;
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t i = 0; i < 3; ++i) {
      const double g = gu[r * 6 + i];
      want.push_back(g / (1 + std::exp(-g)) * gu[r * 6 + 3 + i]);
    }
  }
  expect_near(read(act), want, 1e-5);

  meta_.token_ids = {6};  // outside the table
  ASSERT_TRUE(backend_->begin_step(meta_).ok());
  EXPECT_FALSE(backend_->embedding(table, emb.row_slice(0, 1)).ok());
}

TEST_F(CpuOpsTest, LoraShrinkExpandOverSegmentsOfDifferentRanks) {
  // Rows 0-1: adapter A; row 2: no adapter; rows 3-6: adapter B. Two tables (say q and k):
  // A targets q with rank 4 and not k; B targets q with rank 2 and k with rank 8. Once with A and
  // B in F32, once in BF16 (--lora-dtype bf16; widened exactly, x stays f32), where each
  // segment's adapter has 40 rows so that sgemm and the small-row kernels both run.
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const int64_t seg = dtype == DType::kF32 ? 2 : 40;  // rows of the first segment
    const int64_t n = seg + 1 + (dtype == DType::kF32 ? 4 : 40), in = 300, out_q = 10, out_k = 6;
    meta_.token_ids.assign(static_cast<size_t>(n), 0);
    meta_.lora_segments = {{0, static_cast<int32_t>(seg)},
                           {static_cast<int32_t>(seg + 1), static_cast<int32_t>(n)}};
    meta_.num_lora_tables = 2;
    struct Pair {
      Tensor a, b;
      int32_t rank;
      float scale;
    };
    auto pair = [&](int64_t rank, int64_t out, float scale) {
      return Pair{in_dtype(random_tensor(rank, in), dtype),
                  in_dtype(random_tensor(out, rank), dtype), static_cast<int32_t>(rank), scale};
    };
    const Pair qa = pair(4, out_q, 2.0f), qb = pair(2, out_q, 0.5f), kb = pair(8, out_k, 1.5f);
    auto slice = [&](const Pair& p) {
      return LoraSlice{p.a.data, p.b.data, p.rank, p.scale, dtype};
    };
    // lora_slices[table * segments + segment]
    meta_.lora_slices = {slice(qa), slice(qb), LoraSlice{}, slice(kb)};
    ASSERT_TRUE(backend_->begin_step(meta_).ok());

    const Tensor x = random_tensor(n, in, in + 4, 4);
    const Tensor y = random_tensor(n, out_q + out_k);
    const Tensor tmp = random_tensor(n, 10);  // the widest segment: 2 + 8
    const auto xv = read(x), before = read(y);
    const int32_t tables[] = {0, 1};
    const Tensor outputs[] = {y.col_slice(0, out_q), y.col_slice(out_q, out_k)};
    ASSERT_TRUE(backend_->lora_shrink(x, tables, tmp).ok());
    ASSERT_TRUE(backend_->lora_expand(tmp, tables, outputs).ok());

    std::vector<double> want = before;
    auto add = [&](const Pair& p, int64_t row, int64_t col0, int64_t width) {
      const auto av = read(p.a), bv = read(p.b);
      for (int64_t o = 0; o < width; ++o) {
        double acc = 0;
        for (int64_t k = 0; k < p.rank; ++k) {
          double shrunk = 0;
          for (int64_t i = 0; i < in; ++i) shrunk += xv[row * in + i] * av[k * in + i];
          acc += shrunk * bv[o * p.rank + k];
        }
        want[row * (out_q + out_k) + col0 + o] += p.scale * acc;
      }
    };
    for (int64_t r = 0; r < seg; ++r) add(qa, r, 0, out_q);
    for (int64_t r = seg + 1; r < n; ++r) {
      add(qb, r, 0, out_q);
      add(kb, r, out_q, out_k);
    }
    const auto got = read(y);
    expect_near(got, want, 1e-4);
    for (int64_t i = 0; i < out_q + out_k; ++i)  // the row with no adapter is untouched
      EXPECT_EQ(got[seg * (out_q + out_k) + i], before[seg * (out_q + out_k) + i]);
  }
}

}  // namespace
}  // namespace loraserve::kernels
