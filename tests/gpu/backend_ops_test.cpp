// Every op of the CUDA backend against the CPU backend (the reference), in the spirit of ggml's
// test-backend-ops. An op case names its tensors (shape, dtype role, initial values), the step
// metadata it needs and the call; the harness builds the same values on both backends (rounded
// to BF16 first, so both compute from identical numbers), runs the call on each, and compares
// every tensor afterwards (outputs, in-place updates, inputs that must stay untouched) against
// the case's bound:  |gpu - cpu| <= rtol * |cpu| + rms_tol * rms(cpu) + atol.
// Adding an op is one more case in all_cases(). Sampling and uploads have their own tests below.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <thread>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/gpu/gpu_test_util.h"

namespace loraserve::testing {
namespace {

using kernels::AttentionShape;
using kernels::Backend;
using kernels::LoraSegment;
using kernels::LoraSlice;
using kernels::StepMeta;
using kernels::Tensor;

enum class Role { kActivation, kF32 };  // the backend's activation dtype, or always F32

struct TensorSpec {
  std::string name;
  int64_t rows = 0, cols = 0;
  int64_t stride = 0;  // 0: cols
  Role role = Role::kActivation;
  float lo = -1.0f, hi = 1.0f;  // initial values uniform in [lo, hi)
};

// |gpu - cpu| <= rtol * |cpu| + rms_tol * rms(cpu) + atol, element by element; where the case
// gives a tensor's magnitudes m (see OpCase::magnitude), rtol * m replaces rtol * |cpu|.
struct Bound {
  double rtol = 0, rms_tol = 0, atol = 0;
};
// One rounding to BF16 (relative 2^-9) with a margin of 2, and cancellation near zero covered
// relative to the tensor's scale.
constexpr Bound kExact{0, 0, 0};
constexpr Bound kOneRounding{1.0 / 256, 1.0 / 1024, 0};
constexpr Bound kDotProduct{1.0 / 128, 1.0 / 256, 0};  // f32 sums of BF16 products, BF16 out
constexpr Bound kNorm{1.0 / 128, 1.0 / 512, 0};
constexpr Bound kTwoRoundings{1.0 / 64, 1.0 / 256, 0};  // e.g. a rounded residual, then its norm
// LoRA shrink then expand, y += s * (x A^T) B^T. The GPU rounds the intermediate t = x A^T to BF16
// and y once more; the CPU keeps both in F32. Each BF16 rounding errs by at most u = 2^-8 of what
// it rounds, and t's error reaches y through |s B|, so |gpu - cpu| <= u |y| + u sum_r |s B_or|
// |t_r| <= 2u m with m = |y0| + sum_r |s B_or| |t_r| (F32 sums differ far below that). On an H200
// the four layouts reach 0.55 to 0.63 of it (a PyTorch emulation: 0.55); kTwoRoundings, relative
// to |y|, failed there (225 of 262,144 elements) where the sum cancels.
constexpr Bound kTwoRoundingsOfMagnitude{2.0 / 256, 0, 0};

struct OpCase {
  std::string name;
  std::vector<TensorSpec> tensors;
  // The step metadata given the tensors as placed on one backend (LoRA slices point into them);
  // empty: the op needs no step.
  std::function<StepMeta(const std::vector<Tensor>&)> meta;
  std::function<Status(Backend&, const std::vector<Tensor>&)> run;
  Bound bound;
  // Optional: per tensor, the magnitude each element's rounding error scales with, computed in
  // double from the initial values (an empty vector: |cpu|, as Bound says).
  std::function<std::vector<std::vector<double>>(const std::vector<std::vector<float>>&)> magnitude;
};

float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

std::vector<std::vector<float>> initial_values(const OpCase& c) {
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(c.name)));
  std::vector<std::vector<float>> init;
  for (const TensorSpec& t : c.tensors) {
    std::uniform_real_distribution<float> u(t.lo, t.hi);
    const int64_t stride = t.stride > 0 ? t.stride : t.cols;
    std::vector<float> v(static_cast<size_t>(t.rows * stride));
    for (float& x : v) x = t.role == Role::kActivation ? round_bf16(u(rng)) : u(rng);
    init.push_back(std::move(v));
  }
  return init;
}

// Places the case's tensors on `b`, runs it, and reads every tensor back as f32 (rows * cols).
Result<std::vector<std::vector<float>>> run_case(Backend& b, const OpCase& c,
                                                 const std::vector<std::vector<float>>& init) {
  std::vector<kernels::DeviceBuffer> buffers;
  std::vector<Tensor> tensors;
  for (size_t i = 0; i < c.tensors.size(); ++i) {
    const TensorSpec& s = c.tensors[i];
    const DType dt = s.role == Role::kF32 ? DType::kF32 : b.activation_dtype();
    const int64_t stride = s.stride > 0 ? s.stride : s.cols;
    LS_ASSIGN_OR_RETURN(kernels::DeviceBuffer buf,
                        b.allocate(static_cast<size_t>(s.rows * stride) * dtype_size(dt)));
    LS_RETURN_IF_ERROR(b.copy_to_device(buf.view(dt, s.rows, stride), init[i].data(), DType::kF32,
                                        static_cast<size_t>(s.rows * stride)));
    tensors.push_back(Tensor{buf.data(), dt, s.rows, s.cols, stride});
    buffers.push_back(std::move(buf));
  }
  StepMeta meta;
  if (c.meta) {
    meta = c.meta(tensors);
    LS_RETURN_IF_ERROR(b.begin_step(meta));
  }
  LS_RETURN_IF_ERROR(c.run(b, tensors).with_context(b.kind()));
  std::vector<std::vector<float>> out;
  for (const Tensor& t : tensors) {
    std::vector<float> v(static_cast<size_t>(t.rows * t.cols));
    LS_RETURN_IF_ERROR(b.copy_to_host(t, v.data()));
    out.push_back(std::move(v));
  }
  return out;
}

// Row-per-token metadata without sequences: positions `pos(i)`, slots i.
StepMeta rows_meta(int64_t n, const std::function<int32_t(int64_t)>& pos) {
  StepMeta m;
  for (int64_t i = 0; i < n; ++i) {
    m.token_ids.push_back(0);
    m.positions.push_back(pos(i));
    m.slot_mapping.push_back(static_cast<int32_t>(i));
    m.row_seq.push_back(0);
  }
  return m;
}

// --- cases

std::vector<OpCase> embedding_cases() {
  std::vector<OpCase> cases;
  for (auto [n, vocab, dim] : {std::tuple{5, 50, 64}, {64, 1000, 4096}, {1, 32000, 100}}) {
    OpCase c;
    c.name = fmt::format("embedding_{}x{}_vocab{}", n, dim, vocab);
    c.tensors = {{"table", vocab, dim}, {"out", n, dim}};
    c.meta = [n = n, vocab = vocab](const std::vector<Tensor>&) {
      StepMeta m = rows_meta(n, [](int64_t i) { return static_cast<int32_t>(i); });
      for (int64_t i = 0; i < n; ++i) m.token_ids[i] = static_cast<int32_t>((i * 7919 + 3) % vocab);
      return m;
    };
    c.run = [](Backend& b, const std::vector<Tensor>& t) { return b.embedding(t[0], t[1]); };
    c.bound = kExact;
    cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<OpCase> matmul_cases() {
  struct Shape {
    int64_t n, in, out;
    bool accumulate;
    Role y_role;
    int64_t x_stride;
  };
  std::vector<OpCase> cases;
  for (const Shape& s : {Shape{1, 4096, 4096, false, Role::kActivation, 0},
                         Shape{7, 100, 50, false, Role::kActivation, 0},
                         Shape{64, 1024, 3072, true, Role::kActivation, 0},
                         Shape{5, 256, 1000, false, Role::kF32, 0},
                         Shape{3, 128, 64, true, Role::kActivation, 192}}) {
    OpCase c;
    c.name = fmt::format("matmul_{}x{}_to_{}{}{}{}", s.n, s.in, s.out, s.accumulate ? "_acc" : "",
                         s.y_role == Role::kF32 ? "_f32out" : "", s.x_stride ? "_strided" : "");
    c.tensors = {{"x", s.n, s.in, s.x_stride},
                 {"w", s.out, s.in, 0, Role::kActivation, -0.1f, 0.1f},
                 {"y", s.n, s.out, 0, s.y_role}};
    const bool acc = s.accumulate;
    c.run = [acc](Backend& b, const std::vector<Tensor>& t) {
      return b.matmul(t[0], t[1], t[2], acc);
    };
    // F32 output: only the summation order differs from the CPU's.
    c.bound = s.y_role == Role::kF32 ? Bound{1e-4, 1e-4, 0} : kDotProduct;
    cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<OpCase> elementwise_cases() {
  std::vector<OpCase> cases;
  for (auto [n, cols] : {std::pair{3, 64}, {64, 6144}}) {
    OpCase c;
    c.name = fmt::format("add_bias_{}x{}", n, cols);
    c.tensors = {{"y", n, cols}, {"bias", 1, cols}};
    c.run = [](Backend& b, const std::vector<Tensor>& t) { return b.add_bias(t[0], t[1]); };
    c.bound = kOneRounding;
    cases.push_back(std::move(c));
  }
  for (auto [n, f] : {std::pair{1, 14336}, {7, 100}}) {
    OpCase c;
    c.name = fmt::format("silu_mul_{}x{}", n, f);
    c.tensors = {{"gate_up", n, 2 * f, 0, Role::kActivation, -4.0f, 4.0f}, {"out", n, f}};
    c.run = [](Backend& b, const std::vector<Tensor>& t) { return b.silu_mul(t[0], t[1]); };
    c.bound = kDotProduct;
    cases.push_back(std::move(c));
  }
  for (auto [n, m, cols] : {std::tuple{9, 3, 64}, {64, 64, 4096}}) {
    OpCase c;
    c.name = fmt::format("gather_logits_rows_{}_of_{}x{}", m, n, cols);
    c.tensors = {{"x", n, cols}, {"out", m, cols}};
    c.meta = [n = n, m = m](const std::vector<Tensor>&) {
      StepMeta meta = rows_meta(n, [](int64_t i) { return static_cast<int32_t>(i); });
      for (int64_t j = 0; j < m; ++j)
        meta.logits_rows.push_back(static_cast<int32_t>((j * 5 + 2) % n));
      return meta;
    };
    c.run = [](Backend& b, const std::vector<Tensor>& t) {
      return b.gather_logits_rows(t[0], t[1]);
    };
    c.bound = kExact;
    cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<OpCase> norm_cases() {
  std::vector<OpCase> cases;
  for (auto [n, d] : {std::pair{1, 4096}, {7, 64}, {33, 100}, {2, 8200}}) {
    OpCase c;
    c.name = fmt::format("rms_norm_{}x{}", n, d);
    c.tensors = {{"x", n, d}, {"weight", 1, d, 0, Role::kActivation, 0.5f, 1.5f}, {"out", n, d}};
    c.run = [](Backend& b, const std::vector<Tensor>& t) {
      return b.rms_norm(t[0], t[1], 1e-5f, t[2]);
    };
    c.bound = kNorm;
    cases.push_back(std::move(c));

    OpCase a;
    a.name = fmt::format("add_rms_norm_{}x{}", n, d);
    a.tensors = {{"residual", n, d, 0, Role::kActivation, -4.0f, 4.0f},
                 {"x", n, d},
                 {"weight", 1, d, 0, Role::kActivation, 0.5f, 1.5f},
                 {"out", n, d}};
    a.run = [](Backend& b, const std::vector<Tensor>& t) {
      return b.add_rms_norm(t[0], t[1], t[2], 1e-6f, t[3]);
    };
    a.bound = kTwoRoundings;
    cases.push_back(std::move(a));
  }
  for (auto [n, heads, hd] : {std::tuple{3, 4, 16}, {9, 8, 128}}) {
    OpCase c;
    c.name = fmt::format("head_rms_norm_{}x{}x{}", n, heads, hd);
    c.tensors = {{"x", n, heads * hd}, {"weight", 1, hd, 0, Role::kActivation, 0.5f, 1.5f}};
    const int32_t head_dim = hd;
    c.run = [head_dim](Backend& b, const std::vector<Tensor>& t) {
      return b.head_rms_norm(t[0], head_dim, t[1], 1e-6f);
    };
    c.bound = kNorm;
    cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<OpCase> rope_cases() {
  std::vector<OpCase> cases;
  // (rows, heads, head_dim, row stride beyond the heads: q inside a fused qkv row)
  for (auto [n, heads, hd, extra] : {std::tuple{5, 4, 8, 0}, {16, 32, 128, 2048}, {3, 2, 12, 24}}) {
    OpCase c;
    c.name = fmt::format("rope_{}x{}x{}{}", n, heads, hd, extra ? "_strided" : "");
    c.tensors = {{"x", n, heads * hd, extra ? heads * hd + extra : 0},
                 {"inv_freq", 1, hd / 2, 0, Role::kF32}};
    c.meta = [](const std::vector<Tensor>& t) {
      return rows_meta(t[0].rows, [](int64_t i) { return static_cast<int32_t>((i * 977) % 8192); });
    };
    const int32_t head_dim = hd;
    c.run = [head_dim](Backend& b, const std::vector<Tensor>& t) {
      // Frequencies as models have them: 1 / 10000^(2i / head_dim).
      std::vector<float> f(static_cast<size_t>(head_dim / 2));
      for (size_t i = 0; i < f.size(); ++i)
        f[i] = 1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / static_cast<float>(head_dim));
      LS_RETURN_IF_ERROR(b.copy_to_device(t[1], f.data(), DType::kF32, f.size()));
      return b.rope(t[0], head_dim, t[1]);
    };
    c.bound = kDotProduct;
    cases.push_back(std::move(c));
  }
  return cases;
}

// Sequences for the KV-cache ops: each has `cached` tokens already in the cache and `rows` new
// rows at the positions that follow. Blocks are handed out in a scrambled order.
struct SeqSpec {
  int32_t cached;
  int32_t rows;
};
StepMeta paged_meta(const std::vector<SeqSpec>& seqs, int32_t block_size, int32_t num_blocks) {
  StepMeta m;
  std::vector<int32_t> pool(static_cast<size_t>(num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(17));
  size_t next = 0;
  int32_t max_blocks = 0;
  std::vector<std::vector<int32_t>> tables;
  for (const SeqSpec& s : seqs) {
    const int32_t blocks = (s.cached + s.rows + block_size - 1) / block_size;
    max_blocks = std::max(max_blocks, blocks);
    tables.emplace_back(pool.begin() + static_cast<std::ptrdiff_t>(next),
                        pool.begin() + static_cast<std::ptrdiff_t>(next + blocks));
    next += static_cast<size_t>(blocks);
  }
  m.max_blocks_per_seq = max_blocks;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int32_t j = 0; j < seqs[s].rows; ++j) {
      const int32_t pos = seqs[s].cached + j;
      m.token_ids.push_back(0);
      m.positions.push_back(pos);
      m.slot_mapping.push_back(tables[s][static_cast<size_t>(pos / block_size)] * block_size +
                               pos % block_size);
      m.row_seq.push_back(static_cast<int32_t>(s));
    }
    for (int32_t b = 0; b < max_blocks; ++b)
      m.block_tables.push_back(
          b < static_cast<int32_t>(tables[s].size()) ? tables[s][static_cast<size_t>(b)] : -1);
  }
  return m;
}

std::vector<OpCase> kv_cases() {
  std::vector<OpCase> cases;
  struct Attn {
    std::string what;
    std::vector<SeqSpec> seqs;
    int32_t heads, kv_heads, head_dim, block_size;
  };
  const std::vector<Attn> attns = {
      {"decode_gqa", {{0, 1}, {16, 1}, {99, 1}, {299, 1}}, 8, 2, 64, 16},
      {"prefill_and_decode", {{10, 40}, {5, 1}, {0, 23}, {70, 1}}, 8, 2, 64, 16},
      {"llama3_8b_decode", {{2047, 1}, {300, 1}, {5, 1}}, 32, 8, 128, 16},
      {"mha_long_prefill", {{900, 100}}, 4, 4, 128, 32},
      {"fixture_head_dim_12", {{3, 29}, {31, 1}}, 4, 2, 12, 16},
      {"group_16_head_dim_256", {{40, 2}, {100, 1}}, 16, 1, 256, 8},
      // An odd head_dim: the last output pair of each lane is half padding.
      {"odd_head_dim_9", {{33, 3}, {4, 1}}, 6, 2, 9, 16},
      // A long context: 140k cached tokens, slot offsets of tens of millions of elements (64-bit
      // index arithmetic), every flash-decoding split busy.
      {"long_context_decode", {{140000, 1}, {70000, 1}}, 8, 2, 128, 16},
  };
  for (const Attn& a : attns) {
    int64_t rows = 0, tokens = 0;
    for (const SeqSpec& s : a.seqs) {
      rows += s.rows;
      tokens += s.cached + s.rows;
    }
    const int32_t num_blocks = static_cast<int32_t>(tokens / a.block_size + a.seqs.size() + 3);
    const int64_t slots = int64_t{num_blocks} * a.block_size;
    const int64_t width = int64_t{a.heads} * a.head_dim, kv = int64_t{a.kv_heads} * a.head_dim;
    OpCase c;
    c.name = "attention_" + a.what;
    c.tensors = {
        {"q", rows, width}, {"k_cache", slots, kv}, {"v_cache", slots, kv}, {"out", rows, width}};
    const auto seqs = a.seqs;
    const int32_t bs = a.block_size;
    c.meta = [seqs, bs, num_blocks](const std::vector<Tensor>&) {
      return paged_meta(seqs, bs, num_blocks);
    };
    AttentionShape shape;
    shape.num_heads = a.heads;
    shape.num_kv_heads = a.kv_heads;
    shape.head_dim = a.head_dim;
    shape.block_size = a.block_size;
    shape.scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
    c.run = [shape](Backend& b, const std::vector<Tensor>& t) {
      return b.attention(t[0], t[1], t[2], shape, t[3]);
    };
    c.bound = kTwoRoundings;
    cases.push_back(std::move(c));
  }
  {
    // Layers of different shapes in one step (nothing forbids a model whose layers differ): the
    // group of 8 query heads per KV head cuts tiles of 2 rows, the group of 1 tiles of 16 rows.
    // Every call is recorded before any launches, so the first call's kernel must still read
    // tiles cut for its own shape (a tile of 16 rows x 8 heads would overrun its 16 query slots).
    OpCase c;
    c.name = "attention_mixed_shapes_in_one_step";
    const std::vector<SeqSpec> seqs = {{10, 40}, {0, 23}, {70, 1}};
    const int32_t bs = 16, num_blocks = 16;
    const int64_t slots = int64_t{num_blocks} * bs, rows = 64;
    struct Shape {
      int32_t heads, kv_heads, head_dim;
    };
    const std::vector<Shape> shapes = {{16, 2, 64}, {8, 8, 64}, {16, 1, 32}, {4, 4, 128}};
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Shape& sh = shapes[i];
      const int64_t width = int64_t{sh.heads} * sh.head_dim,
                    kv = int64_t{sh.kv_heads} * sh.head_dim;
      c.tensors.push_back({fmt::format("q{}", i), rows, width});
      c.tensors.push_back({fmt::format("k_cache{}", i), slots, kv});
      c.tensors.push_back({fmt::format("v_cache{}", i), slots, kv});
      c.tensors.push_back({fmt::format("out{}", i), rows, width});
    }
    c.meta = [seqs, bs, num_blocks](const std::vector<Tensor>&) {
      return paged_meta(seqs, bs, num_blocks);
    };
    c.run = [shapes, bs](Backend& b, const std::vector<Tensor>& t) {
      for (size_t i = 0; i < shapes.size(); ++i) {
        AttentionShape shape;
        shape.num_heads = shapes[i].heads;
        shape.num_kv_heads = shapes[i].kv_heads;
        shape.head_dim = shapes[i].head_dim;
        shape.block_size = bs;
        shape.scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
        LS_RETURN_IF_ERROR(b.attention(t[4 * i], t[4 * i + 1], t[4 * i + 2], shape, t[4 * i + 3]));
      }
      return ok_status();
    };
    c.bound = kTwoRoundings;
    cases.push_back(std::move(c));
  }
  for (auto [rows, kv] : {std::pair{4, 64}, {37, 1024}}) {
    OpCase c;
    c.name = fmt::format("write_kv_{}x{}", rows, kv);
    const int32_t num_blocks = 8;
    c.tensors = {{"k", rows, kv, kv + 16},
                 {"v", rows, kv},
                 {"k_cache", num_blocks * 16, kv},
                 {"v_cache", num_blocks * 16, kv}};
    const int32_t n = rows;
    c.meta = [n](const std::vector<Tensor>&) {
      return paged_meta({{3, n / 2}, {0, n - n / 2}}, 16, 8);
    };
    c.run = [](Backend& b, const std::vector<Tensor>& t) {
      return b.write_kv(t[0], t[1], t[2], t[3]);
    };
    c.bound = kExact;
    cases.push_back(std::move(c));
  }
  return cases;
}

// LoRA over segments with mixed ranks (0: the adapter does not target that table), rows without
// adapter, multi-row segments longer than one tile, and one-row segments.
struct LoraLayout {
  std::string what;
  int64_t rows = 0, in = 0;
  std::vector<int64_t> outs;  // per table
  std::vector<LoraSegment> segments;
  std::vector<std::vector<int32_t>> ranks;  // [segment][table]
};

std::vector<OpCase> lora_cases_for(const LoraLayout& l) {
  const int64_t tables = static_cast<int64_t>(l.outs.size());
  int64_t width = 0, out_total = 0;
  for (const auto& r : l.ranks)
    width = std::max<int64_t>(width, std::accumulate(r.begin(), r.end(), 0));
  for (int64_t o : l.outs) out_total += o;
  std::vector<TensorSpec> specs = {
      {"x", l.rows, l.in}, {"tmp", l.rows, width + 3}, {"y", l.rows, out_total}};
  // Index of A (B follows) of (segment, table) in the tensor list; -1 when rank 0.
  std::vector<std::vector<int>> at(l.segments.size(),
                                   std::vector<int>(static_cast<size_t>(tables), -1));
  for (size_t s = 0; s < l.segments.size(); ++s) {
    for (int64_t t = 0; t < tables; ++t) {
      const int32_t r = l.ranks[s][static_cast<size_t>(t)];
      if (r == 0) continue;
      at[s][static_cast<size_t>(t)] = static_cast<int>(specs.size());
      specs.push_back({fmt::format("A_{}_{}", s, t), r, l.in, 0, Role::kActivation, -0.5f, 0.5f});
      specs.push_back({fmt::format("B_{}_{}", s, t), l.outs[static_cast<size_t>(t)], r, 0,
                       Role::kActivation, -0.5f, 0.5f});
    }
  }
  auto meta = [l, at, tables](const std::vector<Tensor>& t) {
    StepMeta m = rows_meta(l.rows, [](int64_t i) { return static_cast<int32_t>(i); });
    m.lora_segments = l.segments;
    m.num_lora_tables = static_cast<int32_t>(tables);
    m.lora_slices.resize(static_cast<size_t>(tables) * l.segments.size());
    for (size_t s = 0; s < l.segments.size(); ++s) {
      for (int64_t tb = 0; tb < tables; ++tb) {
        const int i = at[s][static_cast<size_t>(tb)];
        if (i < 0) continue;
        LoraSlice& sl = m.lora_slices[static_cast<size_t>(tb) * l.segments.size() + s];
        sl.a = t[static_cast<size_t>(i)].data;
        sl.b = t[static_cast<size_t>(i) + 1].data;
        sl.rank = l.ranks[s][static_cast<size_t>(tb)];
        sl.scale = 0.5f + 0.25f * static_cast<float>(s % 3);
      }
    }
    return m;
  };
  std::vector<int32_t> ids(static_cast<size_t>(tables));
  std::iota(ids.begin(), ids.end(), 0);
  const std::vector<int64_t> outs = l.outs;
  auto outputs = [outs](const Tensor& y) {
    std::vector<Tensor> o;
    int64_t col = 0;
    for (int64_t w : outs) {
      o.push_back(y.col_slice(col, w));
      col += w;
    }
    return o;
  };
  OpCase shrink{
      "lora_shrink_" + l.what,
      specs,
      meta,
      [ids](Backend& b, const std::vector<Tensor>& t) { return b.lora_shrink(t[0], ids, t[1]); },
      kDotProduct,
      {}};
  OpCase expand{"lora_expand_" + l.what,
                specs,
                meta,
                [ids, outputs](Backend& b, const std::vector<Tensor>& t) {
                  const std::vector<Tensor> o = outputs(t[2]);
                  return b.lora_expand(t[1], ids, o);
                },
                kDotProduct,
                {}};
  OpCase both{"lora_shrink_expand_" + l.what,
              specs,
              meta,
              [ids, outputs](Backend& b, const std::vector<Tensor>& t) {
                LS_RETURN_IF_ERROR(b.lora_shrink(t[0], ids, t[1]));
                const std::vector<Tensor> o = outputs(t[2]);
                return b.lora_expand(t[1], ids, o);
              },
              kTwoRoundingsOfMagnitude,
              {}};
  // m[row, o] = |y0| + sum_r |s B_or| |t_r| on y (tensor 2); the other tensors keep |cpu|.
  both.magnitude = [l, at, out_total](const std::vector<std::vector<float>>& init) {
    std::vector<std::vector<double>> m(init.size());
    const std::vector<float>& x = init[0];
    m[2].resize(init[2].size());
    for (size_t e = 0; e < m[2].size(); ++e) m[2][e] = std::fabs(init[2][e]);
    for (size_t s = 0; s < l.segments.size(); ++s) {
      const double scale = 0.5 + 0.25 * static_cast<double>(s % 3);
      int64_t col0 = 0;
      for (size_t tb = 0; tb < l.outs.size(); ++tb) {
        const int i = at[s][tb];
        const int64_t out = l.outs[tb];
        if (i >= 0) {
          const int32_t rank = l.ranks[s][tb];
          const std::vector<float>& a = init[static_cast<size_t>(i)];
          const std::vector<float>& b = init[static_cast<size_t>(i) + 1];
          for (int32_t row = l.segments[s].row_begin; row < l.segments[s].row_end; ++row) {
            std::vector<double> t(static_cast<size_t>(rank));
            for (int32_t j = 0; j < rank; ++j) {
              double sum = 0;
              for (int64_t c = 0; c < l.in; ++c)
                sum += static_cast<double>(x[static_cast<size_t>(row * l.in + c)]) *
                       a[static_cast<size_t>(j * l.in + c)];
              t[static_cast<size_t>(j)] = std::fabs(sum);
            }
            for (int64_t o = 0; o < out; ++o) {
              double acc = 0;
              for (int32_t j = 0; j < rank; ++j)
                acc += std::fabs(scale * b[static_cast<size_t>(o * rank + j)]) *
                       t[static_cast<size_t>(j)];
              m[2][static_cast<size_t>(row * out_total + col0 + o)] += acc;
            }
          }
        }
        col0 += out;
      }
    }
    return m;
  };
  return {shrink, expand, both};
}

std::vector<OpCase> lora_cases() {
  std::vector<LoraLayout> layouts;
  layouts.push_back({"mixed_segments",
                     26,
                     64,
                     {64, 32, 32},
                     {{0, 1}, {1, 5}, {6, 26}},
                     {{8, 8, 8}, {16, 0, 4}, {4, 4, 4}}});
  LoraLayout decode{"one_row_segments", 64, 256, {512}, {}, {}};
  for (int32_t r = 0; r < 64; ++r) {
    decode.segments.push_back({r, r + 1});
    decode.ranks.push_back({std::vector<int32_t>{8, 16, 0, 4}[static_cast<size_t>(r % 4)]});
  }
  layouts.push_back(decode);
  // Widths that are not multiples of 8 and odd ranks: the scalar (unvectorized) paths.
  layouts.push_back({"odd_shapes", 20, 100, {36, 12}, {{0, 3}, {3, 20}}, {{5, 7}, {3, 1}}});
  layouts.push_back({"llama3_8b_4_adapters",
                     64,
                     4096,
                     {4096},
                     {{0, 16}, {16, 32}, {32, 48}, {48, 64}},
                     {{16}, {16}, {16}, {16}}});
  std::vector<OpCase> cases;
  for (const LoraLayout& l : layouts) {
    for (OpCase& c : lora_cases_for(l)) cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> all;
  for (auto make : {embedding_cases, matmul_cases, elementwise_cases, norm_cases, rope_cases,
                    kv_cases, lora_cases}) {
    for (OpCase& c : make()) all.push_back(std::move(c));
  }
  return all;
}

// --- the harness

class BackendOpsTest : public ::testing::TestWithParam<OpCase> {
 protected:
  static void SetUpTestSuite() {
    if (!no_gpu_reason().empty()) return;
    cpu_ = kernels::create_cpu_backend(0);
    kernels::BackendOptions o;
    o.device = "cuda";
    auto cuda = kernels::create_backend(o);
    ASSERT_TRUE(cuda.ok()) << cuda.status().to_string();
    cuda_ = std::move(*cuda);
  }
  static void TearDownTestSuite() {
    cuda_.reset();
    cpu_.reset();
  }
  static std::unique_ptr<Backend> cpu_, cuda_;
};
std::unique_ptr<Backend> BackendOpsTest::cpu_;
std::unique_ptr<Backend> BackendOpsTest::cuda_;

TEST_P(BackendOpsTest, MatchesCpu) {
  LS_SKIP_WITHOUT_GPU();
  ASSERT_NE(cuda_, nullptr);
  const OpCase& c = GetParam();
  const auto init = initial_values(c);
  auto want = run_case(*cpu_, c, init);
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  auto got = run_case(*cuda_, c, init);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  const std::vector<std::vector<double>> magnitude =
      c.magnitude ? c.magnitude(init) : std::vector<std::vector<double>>{};
  for (size_t i = 0; i < c.tensors.size(); ++i) {
    const std::vector<float>& w = (*want)[i];
    const std::vector<float>& g = (*got)[i];
    const std::vector<double>* mag =
        i < magnitude.size() && !magnitude[i].empty() ? &magnitude[i] : nullptr;
    double ss = 0;
    for (float v : w) ss += static_cast<double>(v) * v;
    const double rms = w.empty() ? 0.0 : std::sqrt(ss / static_cast<double>(w.size()));
    size_t bad = 0, worst = 0;
    double worst_ratio = 0;
    for (size_t e = 0; e < w.size(); ++e) {
      const double scale = mag != nullptr ? (*mag)[e] : std::fabs(w[e]);
      const double bound = c.bound.rtol * scale + c.bound.rms_tol * rms + c.bound.atol;
      const double diff = std::fabs(static_cast<double>(g[e]) - w[e]);
      const double ratio = diff <= bound ? (bound > 0 ? diff / bound : 0.0) : 2.0 + diff;
      if (!(diff <= bound)) ++bad;
      if (!(ratio <= worst_ratio)) {
        worst_ratio = ratio;
        worst = e;
      }
    }
    if (bad == 0 && c.bound.rtol > 0) {
      std::printf("%s: tensor %s: worst error %.3f of the bound\n", c.name.c_str(),
                  c.tensors[i].name.c_str(), worst_ratio);
    }
    const int64_t cols = c.tensors[i].cols;
    EXPECT_EQ(bad, 0u) << c.name << ": tensor " << c.tensors[i].name << ": " << bad << " of "
                       << w.size() << " elements outside the bound; worst at row "
                       << worst / static_cast<size_t>(cols) << " col "
                       << worst % static_cast<size_t>(cols) << ": gpu " << g[worst] << ", cpu "
                       << w[worst] << " (rms " << rms << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, BackendOpsTest, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return info.param.name;
                         });

// --- sampling: the same picks and logprobs as the CPU sampler, on F32 and BF16 logits

TEST(BackendSampleTest, MatchesCpuSampler) {
  LS_SKIP_WITHOUT_GPU();
  auto cpu = kernels::create_cpu_backend(0);
  kernels::BackendOptions o;
  o.device = "cuda";
  auto cuda = kernels::create_backend(o);
  ASSERT_TRUE(cuda.ok()) << cuda.status().to_string();
  std::mt19937 rng(5);
  for (int64_t vocab : {50, 32000, 128256}) {
    std::vector<kernels::SampleParams> params;
    auto add = [&](float t, int32_t k, float p, int32_t lp) {
      kernels::SampleParams sp;
      sp.temperature = t;
      sp.top_k = k;
      sp.top_p = p;
      sp.num_logprobs = lp;
      sp.uniform = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
      params.push_back(sp);
    };
    add(0, 0, 1, 0);      // greedy
    add(0, 0, 1, 5);      // greedy with logprobs
    add(0.7f, 0, 1, 0);   // plain temperature
    add(1.0f, 40, 1, 0);  // top-k
    add(1.0f, 0, 0.9f, 0);
    add(0.8f, 50, 0.8f, 3);
    add(1.5f, 0, 0.95f, 20);
    add(1.0f, 1, 1, 0);
    add(1.0f, 0, 0.01f, 0);
    // Temperature with logprobs and no filter: the row is sorted for its top logprobs, but the
    // draw walks token-id order as on the CPU (the same uniform picks the same token).
    for (int i = 0; i < 8; ++i) add(0.6f + 0.1f * static_cast<float>(i), 0, 1, 1 + i);
    // top_p <= 0 keeps the most likely token alone, as the CPU does.
    add(1.0f, 0, 0.0f, 0);
    add(1.0f, 10, -1.0f, 2);
    // Rows the CUDA backend copies to the host and picks with the CPU sampler: logit edits (a
    // bias that forces a token, repetition and frequency penalties), min_p, allowed tokens.
    const std::vector<kernels::LogitEdit> force = {{7, 100.0f, 1.0f, 0.0f}};
    std::vector<kernels::LogitEdit> penalties;
    for (int32_t id = 0; id < 40; ++id)
      penalties.push_back(
          {id, id % 3 == 0 ? -2.0f : 0.0f, 1.3f, 0.5f * static_cast<float>(id % 4)});
    const std::vector<int32_t> allowed = {1, 4, 9, 16, 25, 36, 49};
    add(0, 0, 1, 2);
    params.back().edits = force;
    add(0, 0, 1, 3);
    params.back().edits = penalties;
    add(0.9f, 0, 1, 2);
    params.back().edits = penalties;
    add(1.0f, 0, 1, 2);
    params.back().min_p = 0.2f;
    add(1.2f, 20, 0.9f, 0);
    params.back().min_p = 0.05f;
    params.back().edits = penalties;
    add(0, 0, 1, 0);
    params.back().allowed = allowed;
    add(1.0f, 0, 1, 1);
    params.back().allowed = allowed;
    add(0, 0, 1, 0);  // ties: see below
    add(0, 0, 1, 1);  // ties in different parts of a long row: see below
    const int64_t rows = static_cast<int64_t>(params.size());
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    std::normal_distribution<float> nd(0.0f, 3.0f);
    for (float& v : logits) v = round_bf16(nd(rng));
    float* tie = logits.data() + (rows - 2) * vocab;  // this row's maximum at ids 7 and 3
    tie[3] = tie[7] = 100.0f;
    // The last row's maximum at the last id and at one in the middle: in different parts of the
    // row's statistics once the row is longer than one part (4K logits).
    float* far = logits.data() + (rows - 1) * vocab;
    far[vocab - 1] = far[vocab / 2 + 1] = 100.0f;
    for (DType gpu_dtype : {DType::kF32, DType::kBF16}) {
      std::vector<kernels::SampleResult> want, got;
      auto cpu_buf = cpu->allocate(logits.size() * 4);
      ASSERT_TRUE(cpu_buf.ok());
      const Tensor cl = cpu_buf->view(DType::kF32, rows, vocab);
      ASSERT_TRUE(cpu->copy_to_device(cl, logits.data(), DType::kF32, logits.size()).ok());
      ASSERT_TRUE(cpu->sample(cl, params, &want).ok());
      auto gpu_buf = (*cuda)->allocate(logits.size() * dtype_size(gpu_dtype));
      ASSERT_TRUE(gpu_buf.ok());
      const Tensor gl = gpu_buf->view(gpu_dtype, rows, vocab);
      ASSERT_TRUE((*cuda)->copy_to_device(gl, logits.data(), DType::kF32, logits.size()).ok());
      const Status st = (*cuda)->sample(gl, params, &got);
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_EQ(got.size(), want.size());
      for (size_t r = 0; r < want.size(); ++r) {
        const std::string where =
            fmt::format("vocab {} row {} ({})", vocab, r, dtype_name(gpu_dtype));
        EXPECT_EQ(got[r].token_id, want[r].token_id) << where;
        EXPECT_NEAR(got[r].logprob, want[r].logprob, 1e-4) << where;
        ASSERT_EQ(got[r].top.size(), want[r].top.size()) << where;
        for (size_t j = 0; j < want[r].top.size(); ++j) {
          EXPECT_EQ(got[r].top[j].token_id, want[r].top[j].token_id) << where << " top " << j;
          EXPECT_NEAR(got[r].top[j].logprob, want[r].top[j].logprob, 1e-4) << where << " top " << j;
        }
      }
      EXPECT_EQ(got[got.size() - 2].token_id, 3) << "greedy ties go to the lowest id";
      EXPECT_EQ(got.back().token_id, vocab / 2 + 1) << "and across parts of the row";
      EXPECT_EQ(got[got.size() - 9].token_id, 7) << "a bias of 100 forces its token";
    }
  }
}

// --- asynchronous uploads: they land while other work runs, and refuse pageable sources

TEST(BackendUploadTest, AsyncUploadLandsWhileOpsRun) {
  LS_SKIP_WITHOUT_GPU();
  kernels::BackendOptions o;
  o.device = "cuda";
  auto made = kernels::create_backend(o);
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  Backend& b = **made;
  const DType dt = b.activation_dtype();
  const int64_t n = 16 << 20;  // 32 MiB of BF16
  auto host = b.allocate_host(static_cast<size_t>(n) * 2);
  auto dst = b.allocate(static_cast<size_t>(n) * 2);
  ASSERT_TRUE(host.ok() && dst.ok());
  auto* h = static_cast<uint16_t*>(host->data());
  for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(static_cast<float>(i % 251) - 125.0f);
  const Tensor dst_view = dst->view(dt, 1, n);

  std::vector<float> pageable(16, 1.0f);
  auto refused =
      b.copy_to_device_async(dst->view(DType::kF32, 1, 16), pageable.data(), DType::kF32, 16);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << refused.status().to_string();

  auto ticket = b.copy_to_device_async(dst_view, h, dt, static_cast<size_t>(n));
  ASSERT_TRUE(ticket.ok()) << ticket.status().to_string();
  // Compute on the backend's own stream meanwhile: 20 GEMMs of 64 x 4096 x 4096.
  auto x = b.allocate(64 * 4096 * 2), w = b.allocate(4096 * 4096 * 2),
       y = b.allocate(64 * 4096 * 2);
  ASSERT_TRUE(x.ok() && w.ok() && y.ok());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(
        b.matmul(x->view(dt, 64, 4096), w->view(dt, 4096, 4096), y->view(dt, 64, 4096), false)
            .ok());
  }
  ASSERT_TRUE(b.synchronize().ok());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  Result<bool> done = b.upload_done(*ticket);
  while (done.ok() && !*done && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    done = b.upload_done(*ticket);
  }
  ASSERT_TRUE(done.ok()) << done.status().to_string();
  ASSERT_TRUE(*done) << "the upload did not finish within 10 s";
  EXPECT_EQ(b.upload_done(*ticket + 1000).status().code(), StatusCode::kInvalidArgument)
      << "a ticket that was never issued";
  std::vector<float> back(static_cast<size_t>(n));
  ASSERT_TRUE(b.copy_to_host(dst_view, back.data()).ok());
  for (int64_t i = 0; i < n; i += 4099) {
    ASSERT_EQ(back[static_cast<size_t>(i)], static_cast<float>(i % 251) - 125.0f)
        << "element " << i;
  }
}

}  // namespace
}  // namespace loraserve::testing
