// The device copy of one step's integer metadata (StepMeta plus the tiles the kernels iterate
// over): one contiguous buffer that starts with StepHeader; every array is found through an
// offset in the header. Kernels receive only the header's address, which stays the same from
// step to step, so a captured CUDA graph replays correctly with the next step's metadata.
// Plain structs, shared by the .cu kernels and the host code that packs them (cuda_step.cpp).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace loraserve::kernels::cuda {

// Rows of one LoRA tile: the SGMV kernels give each tile's rows one pass over an adapter's weights.
inline constexpr int32_t kLoraTileRows = 16;
// Most (row, head) queries one attention block holds.
inline constexpr int32_t kAttentionMaxQueries = 16;
// A layer whose query group has g heads per KV head cuts its attention tiles at
// max(1, kAttentionMaxQueries / g) rows: one of these seven values. Every step carries one tile
// set per value, so layers of different shapes in one step each read tiles cut for them.
inline constexpr int32_t kAttentionTileSets = 7;
__host__ __device__ inline int32_t attention_rows_per_tile(int32_t group) {
  return group >= kAttentionMaxQueries ? 1 : kAttentionMaxQueries / (group > 0 ? group : 1);
}
// The tile set of `rows_per_tile` (a value attention_rows_per_tile returns), or -1.
__host__ __device__ inline int32_t attention_tile_set(int32_t rows_per_tile) {
  switch (rows_per_tile) {
    case 16:
      return 0;
    case 8:
      return 1;
    case 5:
      return 2;
    case 4:
      return 3;
    case 3:
      return 4;
    case 2:
      return 5;
    case 1:
      return 6;
    default:
      return -1;
  }
}

// One adapter's A and B for one targeted layer, as the kernels read them (LoraSlice on the host).
struct DeviceLoraSlice {
  const void* a;  // (rank, in)
  const void* b;  // (out, rank)
  int32_t rank;   // 0: no delta for this segment and table
  float scale;
};

// Up to kLoraTileRows consecutive rows of one LoRA segment.
struct LoraTile {
  int32_t segment;
  int32_t row_begin;
  int32_t row_count;
  int32_t pad;
};

// Consecutive rows of one sequence that one attention block serves together.
struct AttentionTile {
  int32_t row_begin;
  int32_t row_count;
};

struct StepHeader {
  int32_t num_rows;
  int32_t num_seqs;
  int32_t block_table_stride;  // block ids per sequence in block_tables
  int32_t num_logits_rows;
  int32_t num_segments;
  int32_t num_lora_tiles;
  int32_t num_lora_tables;
  int32_t num_attention_tiles[kAttentionTileSets];  // per tile set (attention_tile_set)
  // Byte offsets from the header's address.
  int64_t token_ids;                            // int32[num_rows]
  int64_t positions;                            // int32[num_rows]
  int64_t slot_mapping;                         // int32[num_rows]
  int64_t row_seq;                              // int32[num_rows]
  int64_t logits_rows;                          // int32[num_logits_rows]
  int64_t lora_tiles;                           // LoraTile[num_lora_tiles]
  int64_t attention_tiles[kAttentionTileSets];  // AttentionTile[num_attention_tiles[set]]
  int64_t lora_slices;                          // DeviceLoraSlice[num_lora_tables * num_segments]
  int64_t block_tables;                         // int32[num_seqs * block_table_stride]
};

template <typename T>
__host__ __device__ inline const T* step_array(const StepHeader* h, int64_t offset) {
  return reinterpret_cast<const T*>(reinterpret_cast<const char*>(h) + offset);
}

}  // namespace loraserve::kernels::cuda
