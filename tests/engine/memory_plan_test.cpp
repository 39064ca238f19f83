// The memory plan as a pure function: the default KV cache (room for max_batch_size full
// contexts within what the backend's headroom leaves), an explicit KV size, and refusals with
// the figures; and the activation scratch the model allocates, counted from the same list.
#include "engine/memory_plan.h"

#include <gtest/gtest.h>

#include "engine/model.h"

namespace loraserve::engine {
namespace {

constexpr double kGiB = 1ull << 30;

// 1 MiB blocks of 16 tokens; a 1024-token context is 64 blocks (64 MiB).
MemoryPlanInput input() {
  MemoryPlanInput in;
  in.device = "test device";
  in.available = static_cast<size_t>(16 * kGiB);
  in.headroom = {0.9, 0.5};
  in.weight_bytes = 2 * kGiB;
  in.weight_dtype = DType::kBF16;
  in.activation_bytes = 0.5 * kGiB;
  in.kv_block_bytes = 1 << 20;
  in.block_size = 16;
  in.max_context = 1024;
  in.max_batch_size = 8;
  return in;
}

TEST(MemoryPlan, DefaultHoldsMaxBatchSizeFullContextsWhenThereIsRoom) {
  auto plan = plan_memory(input());
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->kv_blocks, 8 * 64);
  EXPECT_DOUBLE_EQ(plan->full_contexts, 8.0);
  EXPECT_DOUBLE_EQ(plan->kv_bytes, 8 * 64.0 * (1 << 20));
  EXPECT_DOUBLE_EQ(plan->weight_bytes, 2 * kGiB);
  EXPECT_DOUBLE_EQ(plan->activation_bytes, 0.5 * kGiB);
  const std::string line = plan->describe(input());
  EXPECT_NE(line.find("test device"), std::string::npos) << line;
  EXPECT_NE(line.find("512 blocks of 16 tokens"), std::string::npos) << line;
}

TEST(MemoryPlan, DefaultTakesTheBackendsShareOfWhatIsLeft) {
  MemoryPlanInput in = input();
  in.max_batch_size = 1000;  // wants 62.5 GiB: more than there is
  auto plan = plan_memory(in);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  // (16 GiB * 0.9 - 2 GiB - 0.5 GiB) * 0.5 = 5.95 GiB of 1 MiB blocks.
  EXPECT_EQ(plan->kv_blocks, static_cast<int32_t>((16 * 0.9 - 2.5) * 0.5 * 1024));
  // The headroom is the backend's: a backend that leaves less aside gets more blocks.
  in.headroom = {0.92, 0.9};
  auto roomier = plan_memory(in);
  ASSERT_TRUE(roomier.ok());
  EXPECT_EQ(roomier->kv_blocks, static_cast<int32_t>((16 * 0.92 - 2.5) * 0.9 * 1024));
}

TEST(MemoryPlan, DefaultKeepsOneFullContextEvenWhenTheShareIsSmaller) {
  MemoryPlanInput in = input();
  // Usable 2.565 GiB: the share, (2.565 - 2.5) * 0.5 GiB, is less than one 64 MiB context.
  in.available = static_cast<size_t>(2.85 * kGiB);
  auto plan = plan_memory(in);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->kv_blocks, 64);
}

TEST(MemoryPlan, AnExplicitSizeIsRoundedDownToWholeBlocks) {
  MemoryPlanInput in = input();
  in.kv_cache_bytes = (10 << 20) + 12345;
  auto plan = plan_memory(in);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->kv_blocks, 10);
  in.kv_cache_bytes = 1000;  // less than one block
  auto none = plan_memory(in);
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("holds no block"), std::string::npos);
}

TEST(MemoryPlan, RefusesWhatDoesNotFitWithTheFigures) {
  MemoryPlanInput in = input();
  in.available = static_cast<size_t>(2 * kGiB);
  auto plan = plan_memory(in);
  ASSERT_EQ(plan.status().code(), StatusCode::kResourceExhausted) << plan.status().to_string();
  const std::string& m = plan.status().message();
  EXPECT_NE(m.find("test device"), std::string::npos) << m;
  EXPECT_NE(m.find("2.00 GiB of weights in BF16"), std::string::npos) << m;
  EXPECT_NE(m.find("0.50 GiB of activations"), std::string::npos) << m;
  EXPECT_NE(m.find("--kv-cache-memory"), std::string::npos) << m;
  // An explicit KV size past the usable memory is refused too.
  in = input();
  in.kv_cache_bytes = static_cast<int64_t>(15 * kGiB);
  EXPECT_EQ(plan_memory(in).status().code(), StatusCode::kResourceExhausted);
}

TEST(MemoryPlan, RefusesMoreBlocksThanABlockIdNames) {
  MemoryPlanInput in = input();
  in.available = static_cast<size_t>(1) << 62;
  in.kv_block_bytes = 1;
  in.kv_cache_bytes = int64_t{1} << 40;
  EXPECT_EQ(plan_memory(in).status().code(), StatusCode::kInvalidArgument);
}

TEST(MemoryPlan, WeightBytesAreParametersTimesTheDtype) {
  formats::ModelConfig c;
  c.vocab_size = 100;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.tie_word_embeddings = true;
  EXPECT_DOUBLE_EQ(estimate_weight_bytes(c, DType::kBF16), 2.0 * c.parameter_count());
  EXPECT_DOUBLE_EQ(estimate_weight_bytes(c, DType::kF32), 4.0 * c.parameter_count());
}

TEST(MemoryPlan, ActivationBytesCountEveryScratchTensor) {
  formats::ModelConfig c;
  c.vocab_size = 100;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  ForwardOptions o;
  o.max_rows = 10;
  o.max_logits_rows = 3;
  o.max_lora_rank = 4;
  // Per row: hidden, normed, proj (3 * 8), qkv (8 + 2 * 4), attention (8), gate/up (32),
  // activation (16) and the LoRA scratch (3 * 4); per logits row: hidden (8) and vocab (100, F32).
  const double rows = 10.0 * (24 + 16 + 8 + 32 + 16 + 12);
  EXPECT_DOUBLE_EQ(Model::activation_bytes(c, o, DType::kBF16), 2 * rows + 3 * (2 * 8 + 4 * 100));
  o.max_lora_rank = 0;
  EXPECT_DOUBLE_EQ(Model::activation_bytes(c, o, DType::kF32),
                   4 * (rows - 10 * 12) + 3 * (4 * 8 + 4 * 100));
}

}  // namespace
}  // namespace loraserve::engine
