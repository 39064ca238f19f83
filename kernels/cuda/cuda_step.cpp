#include "kernels/cuda/cuda_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {
namespace {

constexpr size_t kMinBytes = 64 << 10;

int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

Status check_meta(const StepMeta& m, int64_t* num_seqs) {
  const size_t n = m.token_ids.size();
  if (n == 0) return invalid_argument_error("begin_step: a step needs at least one row");
  if (m.positions.size() != n || m.slot_mapping.size() != n || m.row_seq.size() != n) {
    return invalid_argument_error(
        "begin_step: token_ids has {} rows but positions {}, slot_mapping {}, row_seq {}", n,
        m.positions.size(), m.slot_mapping.size(), m.row_seq.size());
  }
  if (m.max_blocks_per_seq < 0 ||
      (m.max_blocks_per_seq == 0 ? !m.block_tables.empty()
                                 : m.block_tables.size() % m.max_blocks_per_seq != 0)) {
    return invalid_argument_error(
        "begin_step: block_tables holds {} ids, not a multiple of max_blocks_per_seq {}",
        m.block_tables.size(), m.max_blocks_per_seq);
  }
  *num_seqs = m.max_blocks_per_seq > 0
                  ? static_cast<int64_t>(m.block_tables.size()) / m.max_blocks_per_seq
                  : 0;
  for (size_t r = 0; r < n; ++r) {
    if (m.positions[r] < 0)
      return invalid_argument_error("begin_step: row {} has position {}", r, m.positions[r]);
    if (*num_seqs > 0 && (m.row_seq[r] < 0 || m.row_seq[r] >= *num_seqs)) {
      return invalid_argument_error("begin_step: row {} reads block table {} of {}", r,
                                    m.row_seq[r], *num_seqs);
    }
  }
  for (size_t j = 0; j < m.logits_rows.size(); ++j) {
    if (m.logits_rows[j] < 0 || static_cast<size_t>(m.logits_rows[j]) >= n) {
      return invalid_argument_error("begin_step: logits row {} is {}, outside [0, {})", j,
                                    m.logits_rows[j], n);
    }
  }
  std::vector<std::pair<int32_t, int32_t>> segs;
  for (size_t s = 0; s < m.lora_segments.size(); ++s) {
    const LoraSegment& g = m.lora_segments[s];
    if (g.row_begin < 0 || g.row_begin > g.row_end || static_cast<size_t>(g.row_end) > n) {
      return invalid_argument_error("begin_step: LoRA segment {} is rows [{}, {}) of {}", s,
                                    g.row_begin, g.row_end, n);
    }
    segs.emplace_back(g.row_begin, g.row_end);
  }
  std::sort(segs.begin(), segs.end());
  for (size_t s = 1; s < segs.size(); ++s) {
    if (segs[s].first < segs[s - 1].second) {
      return invalid_argument_error("begin_step: LoRA segments [{}, {}) and [{}, {}) overlap",
                                    segs[s - 1].first, segs[s - 1].second, segs[s].first,
                                    segs[s].second);
    }
  }
  if (!m.lora_segments.empty()) {
    const size_t want =
        static_cast<size_t>(std::max(0, m.num_lora_tables)) * m.lora_segments.size();
    if (m.num_lora_tables <= 0 || m.lora_slices.size() != want) {
      return invalid_argument_error("begin_step: {} LoRA slices for {} tables x {} segments",
                                    m.lora_slices.size(), m.num_lora_tables,
                                    m.lora_segments.size());
    }
  }
  for (size_t i = 0; i < m.lora_slices.size(); ++i) {
    const LoraSlice& sl = m.lora_slices[i];
    if (sl.rank < 0 || sl.rank > kMaxLoraRank) {
      return invalid_argument_error(
          "begin_step: LoRA slice {} has rank {} (the CUDA backend "
          "serves ranks up to {})",
          i, sl.rank, kMaxLoraRank);
    }
    if (sl.rank > 0 && (sl.a == nullptr || sl.b == nullptr || !std::isfinite(sl.scale))) {
      return invalid_argument_error(
          "begin_step: LoRA slice {} (rank {}) has no weights or a "
          "non-finite scale",
          i, sl.rank);
    }
  }
  return ok_status();
}

}  // namespace

DeviceStep::~DeviceStep() {
  for (Staging& s : staging_) {
    if (s.done != nullptr) {
      cudaEventSynchronize(s.done);
      cudaEventDestroy(s.done);
    }
    if (s.data != nullptr) cudaFreeHost(s.data);
  }
  if (device_ != nullptr) cudaFree(device_);
}

Status DeviceStep::reserve(size_t bytes, cudaStream_t stream) {
  const size_t want = std::max({bytes, 2 * device_bytes_, kMinBytes});
  if (bytes > device_bytes_) {
    if (device_ != nullptr) {
      LS_CUDA_CHECK(cudaStreamSynchronize(stream));  // kernels may still read it
      LS_CUDA_CHECK(cudaFree(device_));
      device_ = nullptr;
      device_bytes_ = 0;
    }
    LS_CUDA_CHECK(cudaMalloc(&device_, want));
    device_bytes_ = want;
    ++generation_;
  }
  for (Staging& s : staging_) {
    if (s.done == nullptr) LS_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    if (bytes <= s.bytes) continue;
    LS_CUDA_CHECK(cudaEventSynchronize(s.done));
    if (s.data != nullptr) {
      LS_CUDA_CHECK(cudaFreeHost(s.data));
      s.data = nullptr;
      s.bytes = 0;
    }
    LS_CUDA_CHECK(cudaHostAlloc(&s.data, want, cudaHostAllocDefault));
    s.bytes = want;
  }
  return ok_status();
}

int32_t DeviceStep::cut_attention_tiles(const std::vector<int32_t>& row_seq, int32_t rows_per_tile,
                                        AttentionTile* tiles) {
  int32_t count = 0;
  const int32_t n = static_cast<int32_t>(row_seq.size());
  for (int32_t r = 0; r < n; ++r) {
    if (count > 0) {
      AttentionTile& t = tiles[count - 1];
      if (row_seq[static_cast<size_t>(r)] == row_seq[static_cast<size_t>(t.row_begin)] &&
          t.row_count < rows_per_tile) {
        ++t.row_count;
        continue;
      }
    }
    tiles[count++] = AttentionTile{r, 1};
  }
  return count;
}

Status DeviceStep::upload(const StepMeta& m, cudaStream_t stream) {
  int64_t num_seqs = 0;
  LS_RETURN_IF_ERROR(check_meta(m, &num_seqs));
  const int64_t n = static_cast<int64_t>(m.token_ids.size());
  const int64_t num_logits = static_cast<int64_t>(m.logits_rows.size());
  const int64_t num_segments = static_cast<int64_t>(m.lora_segments.size());
  int64_t num_lora_tiles = 0;
  for (const LoraSegment& g : m.lora_segments)
    num_lora_tiles += (g.row_end - g.row_begin + kLoraTileRows - 1) / kLoraTileRows;

  StepHeader h = {};
  h.num_rows = static_cast<int32_t>(n);
  h.num_seqs = static_cast<int32_t>(num_seqs);
  h.block_table_stride = m.max_blocks_per_seq;
  h.num_logits_rows = static_cast<int32_t>(num_logits);
  h.num_segments = static_cast<int32_t>(num_segments);
  h.num_lora_tiles = static_cast<int32_t>(num_lora_tiles);
  h.num_lora_tables = num_segments > 0 ? m.num_lora_tables : 0;
  int64_t off = align_up(sizeof(StepHeader), 16);
  auto place = [&](int64_t bytes, int64_t align) {
    off = align_up(off, align);
    const int64_t at = off;
    off += bytes;
    return at;
  };
  h.token_ids = place(4 * n, 4);
  h.positions = place(4 * n, 4);
  h.slot_mapping = place(4 * n, 4);
  h.row_seq = place(4 * n, 4);
  h.logits_rows = place(4 * num_logits, 4);
  h.lora_tiles = place(static_cast<int64_t>(sizeof(LoraTile)) * num_lora_tiles, 16);
  for (int32_t set = 0; set < kAttentionTileSets; ++set)
    h.attention_tiles[set] = place(static_cast<int64_t>(sizeof(AttentionTile)) * n, 8);
  const int64_t num_slices = num_segments > 0 ? static_cast<int64_t>(m.lora_slices.size()) : 0;
  h.lora_slices = place(static_cast<int64_t>(sizeof(DeviceLoraSlice)) * num_slices, 8);
  h.block_tables = place(4 * static_cast<int64_t>(m.block_tables.size()), 4);
  const size_t total = static_cast<size_t>(align_up(off, 16));
  LS_RETURN_IF_ERROR(reserve(total, stream));

  current_ = 1 - current_;
  Staging& s = staging_[current_];
  LS_CUDA_CHECK(cudaEventSynchronize(s.done));  // its previous upload has been read
  char* base = static_cast<char*>(s.data);
  auto put = [&](int64_t at, const std::vector<int32_t>& v) {
    if (!v.empty()) std::memcpy(base + at, v.data(), v.size() * sizeof(int32_t));
  };
  put(h.token_ids, m.token_ids);
  put(h.positions, m.positions);
  put(h.slot_mapping, m.slot_mapping);
  put(h.row_seq, m.row_seq);
  put(h.logits_rows, m.logits_rows);
  put(h.block_tables, m.block_tables);
  auto* lora_tiles = reinterpret_cast<LoraTile*>(base + h.lora_tiles);
  int64_t t = 0;
  for (int64_t seg = 0; seg < num_segments; ++seg) {
    const LoraSegment& g = m.lora_segments[static_cast<size_t>(seg)];
    for (int32_t r = g.row_begin; r < g.row_end; r += kLoraTileRows) {
      lora_tiles[t++] = LoraTile{static_cast<int32_t>(seg), r,
                                 std::min<int32_t>(kLoraTileRows, g.row_end - r), 0};
    }
  }
  auto* slices = reinterpret_cast<DeviceLoraSlice*>(base + h.lora_slices);
  for (int64_t i = 0; i < num_slices; ++i) {
    const LoraSlice& sl = m.lora_slices[static_cast<size_t>(i)];
    slices[i] = DeviceLoraSlice{sl.a, sl.b, sl.rank, sl.scale};
  }
  bool cut[kAttentionTileSets] = {};
  for (int32_t group = 1; group <= kAttentionMaxQueries; ++group) {
    const int32_t rows_per_tile = attention_rows_per_tile(group);
    const int32_t set = attention_tile_set(rows_per_tile);
    if (cut[set]) continue;
    cut[set] = true;
    h.num_attention_tiles[set] = cut_attention_tiles(
        m.row_seq, rows_per_tile, reinterpret_cast<AttentionTile*>(base + h.attention_tiles[set]));
  }
  decode_only_ = num_seqs == n;
  for (int64_t r = 0; r < n && decode_only_; ++r)
    decode_only_ = m.row_seq[static_cast<size_t>(r)] == r;
  header_ = h;
  std::memcpy(base, &h, sizeof(h));
  LS_CUDA_CHECK(cudaMemcpyAsync(device_, base, total, cudaMemcpyHostToDevice, stream));
  LS_CUDA_CHECK(cudaEventRecord(s.done, stream));
  return ok_status();
}

}  // namespace loraserve::kernels::cuda
