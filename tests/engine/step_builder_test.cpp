// Step building on hand-made sequences: rows ordered by adapter slot (base first, stable),
// positions and KV slots from the block tables, -1 past a table's end, logits only for chunks
// that reach their sequence's last token, and one LoRA segment per run of a slot with its slices.
#include "engine/step_builder.h"

#include <gtest/gtest.h>

#include <map>

namespace loraserve::engine {
namespace {

Sequence seq(uint64_t id, std::vector<int32_t> tokens, int32_t computed,
             std::vector<int32_t> blocks, int32_t slot) {
  Sequence s;
  s.id = id;
  s.tokens = std::move(tokens);
  s.prompt_len = static_cast<int32_t>(s.tokens.size());
  s.num_computed = computed;
  s.blocks = std::move(blocks);
  s.slot = slot;
  return s;
}

class StepBuilderTest : public ::testing::Test {
 protected:
  // Slot s, table t: a slice of rank 10 * s + t (0 for table 1: "not targeted").
  const kernels::LoraSlice& slice(int32_t slot, int32_t table) {
    kernels::LoraSlice& sl = slices_[{slot, table}];
    sl.rank = table == 1 ? 0 : 10 * slot + table + 1;
    return sl;
  }
  StepBuilder builder() {
    return StepBuilder(4, 3, [this](int32_t slot, int32_t table) -> const kernels::LoraSlice& {
      return slice(slot, table);
    });
  }
  std::map<std::pair<int32_t, int32_t>, kernels::LoraSlice> slices_;
};

TEST_F(StepBuilderTest, RowsPositionsSlotsAndBlockTables) {
  // a: base model, a 6-token prompt whose first 4 tokens are computed (2 rows: a prefill chunk
  // that reaches the end, so it samples). b: base model, 3 of 5 computed, 1 row (does not sample).
  Sequence a = seq(1, {10, 11, 12, 13, 14, 15}, 4, {7, 3}, -1);
  Sequence b = seq(2, {20, 21, 22, 23, 24}, 3, {5, 9}, -1);
  std::vector<ScheduledChunk> chunks = {{&a, 2}, {&b, 1}};
  kernels::StepMeta m;
  const auto sampling = builder().build(&chunks, &m);
  EXPECT_EQ(m.token_ids, (std::vector<int32_t>{14, 15, 23}));
  EXPECT_EQ(m.positions, (std::vector<int32_t>{4, 5, 3}));
  // Position p of a sequence is slot blocks[p / 4] * 4 + p % 4.
  EXPECT_EQ(m.slot_mapping, (std::vector<int32_t>{3 * 4 + 0, 3 * 4 + 1, 5 * 4 + 3}));
  EXPECT_EQ(m.row_seq, (std::vector<int32_t>{0, 0, 1}));
  EXPECT_EQ(m.max_blocks_per_seq, 2);
  EXPECT_EQ(m.block_tables, (std::vector<int32_t>{7, 3, 5, 9}));
  EXPECT_EQ(m.logits_rows, (std::vector<int32_t>{1}));
  ASSERT_EQ(sampling.size(), 1u);
  EXPECT_EQ(sampling[0]->seq, &a);
  EXPECT_TRUE(m.lora_segments.empty());
  EXPECT_EQ(m.num_lora_tables, 0);
  EXPECT_TRUE(m.lora_slices.empty());
}

TEST_F(StepBuilderTest, AdapterRowsAreContiguousSegmentsWithTheirSlices) {
  // Decode rows (1 each) of sequences on slots 2, base, 0, 2, base; the first has 3 blocks.
  Sequence s2a = seq(1, {1, 2, 3, 4, 5, 6, 7, 8, 9}, 8, {0, 1, 2}, 2);
  Sequence base1 = seq(2, {1, 2}, 1, {3}, -1);
  Sequence s0 = seq(3, {1, 2, 3}, 2, {4}, 0);
  Sequence s2b = seq(4, {1, 2, 3, 4, 5}, 4, {5, 6}, 2);
  Sequence base2 = seq(5, {1}, 0, {7}, -1);
  std::vector<ScheduledChunk> chunks = {{&s2a, 1}, {&base1, 1}, {&s0, 1}, {&s2b, 1}, {&base2, 1}};
  kernels::StepMeta m;
  const auto sampling = builder().build(&chunks, &m);
  // Ordered by slot, stable: base1, base2, s0, s2a, s2b.
  ASSERT_EQ(chunks.size(), 5u);
  EXPECT_EQ(chunks[0].seq, &base1);
  EXPECT_EQ(chunks[1].seq, &base2);
  EXPECT_EQ(chunks[2].seq, &s0);
  EXPECT_EQ(chunks[3].seq, &s2a);
  EXPECT_EQ(chunks[4].seq, &s2b);
  EXPECT_EQ(m.max_blocks_per_seq, 3);
  EXPECT_EQ(m.block_tables,
            (std::vector<int32_t>{3, -1, -1, 7, -1, -1, 4, -1, -1, 0, 1, 2, 5, 6, -1}));
  EXPECT_EQ(m.logits_rows, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(sampling.size(), 5u);
  // Segments: slot 0 is row 2, slot 2 is rows 3..4; base rows are in none.
  ASSERT_EQ(m.lora_segments.size(), 2u);
  EXPECT_EQ(m.lora_segments[0].row_begin, 2);
  EXPECT_EQ(m.lora_segments[0].row_end, 3);
  EXPECT_EQ(m.lora_segments[1].row_begin, 3);
  EXPECT_EQ(m.lora_segments[1].row_end, 5);
  // lora_slices[table * segments + segment].
  EXPECT_EQ(m.num_lora_tables, 3);
  ASSERT_EQ(m.lora_slices.size(), 6u);
  const int32_t want[] = {1, 21, 0, 0, 3, 23};
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(m.lora_slices[i].rank, want[i]) << "slice " << i;
}

TEST_F(StepBuilderTest, ABuilderResetsTheMetaOfThePreviousStep) {
  Sequence s0 = seq(1, {1, 2}, 1, {0}, 0);
  std::vector<ScheduledChunk> first = {{&s0, 1}};
  kernels::StepMeta m;
  builder().build(&first, &m);
  EXPECT_EQ(m.lora_segments.size(), 1u);
  Sequence base = seq(2, {5, 6, 7}, 0, {1}, -1);
  std::vector<ScheduledChunk> second = {{&base, 3}};
  builder().build(&second, &m);
  EXPECT_EQ(m.num_rows(), 3);
  EXPECT_EQ(m.block_tables, (std::vector<int32_t>{1}));
  EXPECT_TRUE(m.lora_segments.empty());
  EXPECT_TRUE(m.lora_slices.empty());
  EXPECT_EQ(m.num_lora_tables, 0);
}

}  // namespace
}  // namespace loraserve::engine
