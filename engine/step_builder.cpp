#include "engine/step_builder.h"

#include <algorithm>

namespace loraserve::engine {

std::vector<const ScheduledChunk*> StepBuilder::build(std::vector<ScheduledChunk>* chunks,
                                                      kernels::StepMeta* meta) const {
  // Rows of one adapter must be contiguous: order the chunks by slot (base-model rows first).
  std::stable_sort(
      chunks->begin(), chunks->end(),
      [](const ScheduledChunk& a, const ScheduledChunk& b) { return a.seq->slot < b.seq->slot; });
  const int32_t bs = block_size_;
  kernels::StepMeta& m = *meta;
  m.token_ids.clear();
  m.positions.clear();
  m.slot_mapping.clear();
  m.row_seq.clear();
  m.block_tables.clear();
  m.logits_rows.clear();
  m.lora_segments.clear();
  m.lora_slices.clear();
  m.num_lora_tables = 0;
  m.max_blocks_per_seq = 0;
  for (const auto& ch : *chunks)
    m.max_blocks_per_seq =
        std::max<int32_t>(m.max_blocks_per_seq, static_cast<int32_t>(ch.seq->blocks.size()));
  std::vector<const ScheduledChunk*> sampling;
  for (size_t ci = 0; ci < chunks->size(); ++ci) {
    const ScheduledChunk& ch = (*chunks)[ci];
    const Sequence* s = ch.seq;
    for (int32_t j = 0; j < ch.num_tokens; ++j) {
      const int32_t pos = s->num_computed + j;
      m.token_ids.push_back(s->tokens[static_cast<size_t>(pos)]);
      m.positions.push_back(pos);
      m.slot_mapping.push_back(s->blocks[static_cast<size_t>(pos / bs)] * bs + pos % bs);
      m.row_seq.push_back(static_cast<int32_t>(ci));
    }
    for (int32_t b = 0; b < m.max_blocks_per_seq; ++b) {
      m.block_tables.push_back(
          b < static_cast<int32_t>(s->blocks.size()) ? s->blocks[static_cast<size_t>(b)] : -1);
    }
    if (ch.samples()) {
      m.logits_rows.push_back(m.num_rows() - 1);
      sampling.push_back(&ch);
    }
  }
  build_lora(*chunks, meta);
  return sampling;
}

void StepBuilder::build_lora(const std::vector<ScheduledChunk>& chunks,
                             kernels::StepMeta* meta) const {
  kernels::StepMeta& m = *meta;
  int32_t row = 0;
  std::vector<int32_t> segment_slots;
  for (const auto& ch : chunks) {
    const int32_t slot = ch.seq->slot;
    if (slot >= 0) {
      if (segment_slots.empty() || segment_slots.back() != slot) {
        m.lora_segments.push_back({row, row});
        segment_slots.push_back(slot);
      }
      m.lora_segments.back().row_end = row + ch.num_tokens;
    }
    row += ch.num_tokens;
  }
  if (segment_slots.empty()) return;
  m.num_lora_tables = num_lora_tables_;
  const size_t nseg = segment_slots.size();
  m.lora_slices.resize(static_cast<size_t>(m.num_lora_tables) * nseg);
  for (int32_t t = 0; t < m.num_lora_tables; ++t) {
    for (size_t k = 0; k < nseg; ++k)
      m.lora_slices[static_cast<size_t>(t) * nseg + k] = slices_(segment_slots[k], t);
  }
}

}  // namespace loraserve::engine
