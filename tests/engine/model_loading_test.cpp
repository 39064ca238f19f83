// Opening a model folder whose checkpoint is broken, or which does not fit in memory, fails with
// a clear error naming the tensor, file or budget at fault; never a crash.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

#include "engine/loader.h"
#include "engine/model.h"
#include "formats/safetensors.h"
#include "tests/reference/golden.h"

namespace loraserve::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kModel = "llama_mha_f32";

// Copies the fixture's config into a fresh folder and writes its weights back after `edit`
// (which may drop, rename or reshape entries). Removed afterwards.
class ModelLoading : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = fs::path(kFixturesDir) / kModel;
    dir_ = fs::temp_directory_path() /
           fmt::format("loraserve_model_loading_{}_{}", ::getpid(), counter_++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy_file(src_ / "config.json", dir_ / "config.json");
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_weights(const std::function<void(std::vector<formats::TensorToWrite>&)>& edit) {
    auto file = formats::SafetensorsFile::open((src_ / "model.safetensors").string());
    ASSERT_TRUE(file.ok()) << file.status().to_string();
    std::vector<formats::TensorToWrite> tensors;
    for (const auto& [name, t] : (*file)->tensors())
      tensors.push_back({name, t.dtype_name, t.shape, t.data, t.nbytes});
    edit(tensors);
    ASSERT_TRUE(formats::write_safetensors((dir_ / "model.safetensors").string(), tensors).ok());
  }

  Status open(const engine::EngineOptions& options = {}) {
    kernels::BackendOptions backend;
    backend.device = "cpu";
    return engine::open_engine(dir_.string(), backend, options).status();
  }

  static void expect_error(const Status& s, StatusCode code,
                           std::initializer_list<const char*> words) {
    EXPECT_EQ(s.code(), code) << s.to_string();
    for (const char* w : words) EXPECT_NE(s.message().find(w), std::string::npos) << s.to_string();
  }

  fs::path src_, dir_;
  static inline int counter_ = 0;
};

TEST_F(ModelLoading, UnchangedCopyOpens) {
  write_weights([](auto&) {});
  EXPECT_TRUE(open().ok()) << open().to_string();
}

TEST_F(ModelLoading, TheCheckpointDtypeIsTheWeightsNotConfigJsonsClaim) {
  // A BF16 checkpoint whose config.json says float32 (a common slip): the weights decide, so
  // --weights-dtype auto does not double the memory of an 8B model.
  const fs::path bf16 = fs::path(kFixturesDir) / "llama_gqa_bf16_llama3rope";
  auto config = formats::load_model_config(bf16.string());
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  auto store = formats::TensorStore::open_folder(bf16.string(), "model.safetensors");
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  auto source = engine::checkpoint_source(std::move(*store));
  for (const char* claim : {"bfloat16", "float32", "float16", ""}) {
    formats::ModelConfig c = *config;
    c.torch_dtype = claim;
    EXPECT_EQ(engine::checkpoint_dtype(c, *source), DType::kBF16) << claim;
  }
  // Without a tensor to look at (random weights for benchmarks), the claim, else BF16.
  auto random = engine::random_source(1);
  formats::ModelConfig c = *config;
  c.torch_dtype = "float32";
  EXPECT_EQ(engine::checkpoint_dtype(c, *random), DType::kF32);
  c.torch_dtype = "";
  EXPECT_EQ(engine::checkpoint_dtype(c, *random), DType::kBF16);
}

TEST_F(ModelLoading, MissingTensor) {
  write_weights([](auto& t) {
    std::erase_if(t, [](const auto& x) { return x.name == "model.layers.1.mlp.up_proj.weight"; });
  });
  // A checkpoint that lacks a required tensor is malformed, not absent.
  expect_error(open(), StatusCode::kInvalidArgument,
               {"'model.layers.1.mlp.up_proj.weight'", "model.safetensors"});
}

TEST_F(ModelLoading, MissingLmHeadWhenUntied) {
  write_weights(
      [](auto& t) { std::erase_if(t, [](const auto& x) { return x.name == "lm_head.weight"; }); });
  expect_error(open(), StatusCode::kInvalidArgument, {"'lm_head.weight'", "tie_word_embeddings"});
}

TEST_F(ModelLoading, WrongShape) {
  write_weights([](auto& t) {
    for (auto& x : t) {
      if (x.name == "model.layers.0.self_attn.k_proj.weight") x.shape = {16, 64};  // was [32, 32]
    }
  });
  expect_error(open(), StatusCode::kInvalidArgument,
               {"'model.layers.0.self_attn.k_proj.weight'", "[16, 64]", "expected [32, 32]"});
}

TEST_F(ModelLoading, WeightsInADtypeThatIsNoWeightDtype) {
  write_weights([](auto& t) {
    for (auto& x : t) {
      if (x.name == "model.norm.weight") x.dtype_name = "I32";  // same byte count as F32
    }
  });
  expect_error(open(), StatusCode::kInvalidArgument, {"'model.norm.weight'", "I32"});
}

TEST_F(ModelLoading, MissingCheckpoint) {
  expect_error(open(), StatusCode::kNotFound, {"model.safetensors"});
}

TEST_F(ModelLoading, RefusesWhatDoesNotFitInMemory) {
  write_weights([](auto&) {});
  engine::EngineOptions options;
  options.kv_cache_bytes = int64_t{1} << 50;  // a pebibyte of KV cache
  expect_error(open(options), StatusCode::kResourceExhausted, {"not enough memory", "KV cache"});
}

}  // namespace
}  // namespace loraserve::testing
