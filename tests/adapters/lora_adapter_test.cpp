// Loading PEFT adapters: what a good one becomes, and a clear error for each way one can be bad,
// with the registry unchanged afterwards.
#include "adapters/lora_adapter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "adapters/registry.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve::adapters {
namespace {

using formats::Projection;
using testing::AdapterSpec;
using testing::make_adapter_spec;
using testing::peft_name;

constexpr const char* kModel = "tests/reference/fixtures/llama_mha_f32";

class LoraAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = formats::load_model_config(kModel);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    config_ = *c;
    backend_ = kernels::create_cpu_backend(1);
    registry_ = std::make_unique<AdapterRegistry>(config_, backend_.get(), RegistryOptions{4, 32});
    // One adapter served throughout: every failure below must leave it in place.
    write_adapter(make_adapter_spec(config_, 4, 1), dir_.path() / "good");
    auto ref = registry_->load("kept", (dir_.path() / "good").string(), false);
    ASSERT_TRUE(ref.ok()) << ref.status().to_string();
    kept_version_ = (*ref)->version;
  }

  // Loads `spec` as task "bad" and returns the error; checks the registry is unchanged.
  Status load_bad(const AdapterSpec& spec) {
    const auto dir = dir_.path() / fmt::format("bad{}", ++counter_);
    write_adapter(spec, dir);
    return load_bad_dir(dir.string());
  }
  Status load_bad_dir(const std::string& dir) {
    auto r = registry_->load("bad", dir, false);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(registry_->size(), 1u);
    EXPECT_EQ(registry_->find("bad"), nullptr);
    EXPECT_NE(registry_->find("kept"), nullptr);
    if (registry_->find("kept")) {
      EXPECT_EQ(registry_->find("kept")->version, kept_version_);
    }
    return r.ok() ? ok_status() : r.status();
  }
  static void expect_message(const Status& st, StatusCode code, const std::string& needle) {
    EXPECT_EQ(st.code(), code) << st.to_string();
    EXPECT_NE(st.message().find(needle), std::string::npos)
        << "message: " << st.message() << "\nexpected: " << needle;
  }

  formats::ModelConfig config_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<AdapterRegistry> registry_;
  testing::TempDir dir_;
  uint64_t kept_version_ = 0;
  int counter_ = 0;
};

TEST_F(LoraAdapterTest, GoodAdapterIsLaidOutWithItsScaleAndValues) {
  AdapterSpec spec = make_adapter_spec(config_, 8, 7);
  spec.config["lora_alpha"] = 4;
  write_adapter(spec, dir_.path() / "r8");
  auto a = LoraAdapter::load((dir_.path() / "r8").string(), config_, backend_.get(), 32);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ((*a)->max_rank(), 8);
  EXPECT_EQ((*a)->target_modules().size(), 7u);
  const LoraModule& m = (*a)->module(1, Projection::kUp);
  EXPECT_EQ(m.rank, 8);
  EXPECT_FLOAT_EQ(m.scale, 0.5f);
  const auto* base = static_cast<const float*>((*a)->weights().data());
  const auto& want_a = spec.tensors.at(peft_name(1, Projection::kUp, 'A')).second;
  const auto& want_b = spec.tensors.at(peft_name(1, Projection::kUp, 'B')).second;
  EXPECT_EQ(base[m.a_offset / 4 + 5], want_a[5]);
  EXPECT_EQ(base[m.b_offset / 4 + want_b.size() - 1], want_b.back());
  // q, k and v A's are adjacent so one GEMM can shrink them together.
  const LoraModule& q = (*a)->module(0, Projection::kQ);
  const LoraModule& k = (*a)->module(0, Projection::kK);
  EXPECT_EQ(k.a_offset, q.a_offset + static_cast<size_t>(q.rank * config_.hidden_size) * 4);
}

TEST_F(LoraAdapterTest, PartialTargetsLeaveOtherModulesEmpty) {
  AdapterSpec spec = make_adapter_spec(config_, 4, 2);
  spec.config["target_modules"] = {"q_proj", "v_proj"};
  spec.config["layers_to_transform"] = {1};
  for (auto it = spec.tensors.begin(); it != spec.tensors.end();) {
    const bool keep = it->first.find("layers.1.self_attn.q_proj") != std::string::npos ||
                      it->first.find("layers.1.self_attn.v_proj") != std::string::npos;
    it = keep ? std::next(it) : spec.tensors.erase(it);
  }
  write_adapter(spec, dir_.path() / "partial");
  auto a = LoraAdapter::load((dir_.path() / "partial").string(), config_, backend_.get(), 32);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ((*a)->module(0, Projection::kQ).rank, 0);
  EXPECT_EQ((*a)->module(1, Projection::kQ).rank, 4);
  EXPECT_EQ((*a)->module(1, Projection::kK).rank, 0);
  EXPECT_EQ((*a)->target_modules(), (std::vector<std::string>{"q_proj", "v_proj"}));
}

TEST_F(LoraAdapterTest, MissingFolderOrFiles) {
  expect_message(load_bad_dir((dir_.path() / "nowhere").string()), StatusCode::kNotFound,
                 "does not exist");
  const auto no_config = dir_.path() / "no_config";
  write_adapter(make_adapter_spec(config_, 4, 3), no_config);
  std::filesystem::remove(no_config / "adapter_config.json");
  expect_message(load_bad_dir(no_config.string()), StatusCode::kNotFound, "adapter_config.json");
  const auto no_weights = dir_.path() / "no_weights";
  write_adapter(make_adapter_spec(config_, 4, 3), no_weights);
  std::filesystem::remove(no_weights / "adapter_model.safetensors");
  expect_message(load_bad_dir(no_weights.string()), StatusCode::kNotFound,
                 "adapter_model.safetensors");
}

TEST_F(LoraAdapterTest, PickleIsRefusedNeverRead) {
  const auto dir = dir_.path() / "pickle";
  write_adapter(make_adapter_spec(config_, 4, 3), dir);
  std::filesystem::remove(dir / "adapter_model.safetensors");
  std::ofstream(dir / "adapter_model.bin") << "\x80\x02}q\x00.";
  expect_message(load_bad_dir(dir.string()), StatusCode::kInvalidArgument, "pickle");
}

TEST_F(LoraAdapterTest, RankMismatchBetweenAAndB) {
  AdapterSpec spec = make_adapter_spec(config_, 4, 4);
  auto& b = spec.tensors[peft_name(0, Projection::kV, 'B')];
  b = {{b.first[0], 2}, std::vector<float>(static_cast<size_t>(b.first[0] * 2), 0.1f)};
  expect_message(load_bad(spec), StatusCode::kInvalidArgument,
                 "rank mismatch for model.layers.0.self_attn.v_proj");
}

TEST_F(LoraAdapterTest, ShapesThatDoNotFitTheBaseModel) {
  AdapterSpec spec = make_adapter_spec(config_, 4, 5);
  spec.tensors[peft_name(1, Projection::kDown, 'A')] = {{4, 50}, std::vector<float>(200, 0.1f)};
  expect_message(load_bad(spec), StatusCode::kInvalidArgument, "do not fit the base model");
}

TEST_F(LoraAdapterTest, ConfigRankDisagreesWithTensors) {
  AdapterSpec spec = make_adapter_spec(config_, 4, 5);
  spec.config["r"] = 8;
  expect_message(load_bad(spec), StatusCode::kInvalidArgument, "gives r = 8");
}

TEST_F(LoraAdapterTest, TargetModuleTheModelLacks) {
  AdapterSpec spec = make_adapter_spec(config_, 4, 6);
  spec.config["target_modules"] = {"q_proj", "c_attn"};
  expect_message(load_bad(spec), StatusCode::kInvalidArgument,
                 "target module 'c_attn' does not exist");
  AdapterSpec regex = make_adapter_spec(config_, 4, 6);
  regex.config["target_modules"] = ".*\\.c_attn";
  expect_message(load_bad(regex), StatusCode::kInvalidArgument, "matches no module");
}

TEST_F(LoraAdapterTest, LayerIndexPastTheModel) {
  AdapterSpec spec = make_adapter_spec(config_, 4, 7);
  spec.tensors[peft_name(2, Projection::kQ, 'A')] = spec.tensors[peft_name(0, Projection::kQ, 'A')];
  expect_message(load_bad(spec), StatusCode::kInvalidArgument,
                 "is for layer 2, but the model has 2 layers");
  AdapterSpec ltt = make_adapter_spec(config_, 4, 7);
  ltt.config["layers_to_transform"] = {0, 5};
  expect_message(load_bad(ltt), StatusCode::kInvalidArgument, "layers_to_transform names layer 5");
  // "layers.01" is no module of the model: not taken for layer 1.
  AdapterSpec zero = make_adapter_spec(config_, 4, 7);
  auto moved = zero.tensors.extract(peft_name(1, Projection::kQ, 'A'));
  moved.key() = "base_model.model.model.layers.01.self_attn.q_proj.lora_A.weight";
  zero.tensors.insert(std::move(moved));
  expect_message(load_bad(zero), StatusCode::kInvalidArgument, "cannot read a layer index");
}

TEST_F(LoraAdapterTest, NonFiniteValues) {
  for (float bad : {NAN, INFINITY}) {
    AdapterSpec spec = make_adapter_spec(config_, 4, 8);
    spec.tensors[peft_name(1, Projection::kO, 'B')].second[3] = bad;
    expect_message(load_bad(spec), StatusCode::kInvalidArgument, "non-finite");
  }
}

// Every A and B of `a` against `spec`'s values as `stored` rounds them; returns how many values
// were compared, after checking each.
size_t expect_values(const LoraAdapter& a, const AdapterSpec& spec,
                     const formats::ModelConfig& config,
                     const std::function<float(float)>& stored) {
  const auto* base = static_cast<const std::byte*>(a.weights().data());
  size_t compared = 0, mismatched = 0;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    for (Projection p : formats::kAllProjections) {
      const LoraModule& m = a.module(l, p);
      EXPECT_EQ(m.rank, 64);
      for (const char which : {'A', 'B'}) {
        const auto& want = spec.tensors.at(peft_name(l, p, which)).second;
        const std::byte* at = base + (which == 'A' ? m.a_offset : m.b_offset);
        std::vector<float> got(want.size());
        convert_to_f32(a.dtype(), at, got.data(), got.size());
        for (size_t i = 0; i < want.size(); ++i, ++compared)
          mismatched += got[i] != stored(want[i]) ? 1 : 0;
      }
    }
  }
  EXPECT_EQ(mismatched, 0u) << "of " << compared;
  return compared;
}

float as_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// Each tensor is read from the file straight into place (F32, and BF16 kept as BF16) or through a
// 4,096-value buffer (F16); a rank-64 adapter has tensors of 6,144 values, so chunks end
// mid-tensor. --lora-dtype auto keeps a BF16 file in BF16 (exact) and holds the others in F32.
TEST_F(LoraAdapterTest, EveryValueLandsInPlaceFromF32Bf16AndF16Files) {
  const AdapterSpec spec = make_adapter_spec(config_, 64, 21);
  for (const std::string dtype : {"F32", "BF16", "F16"}) {
    SCOPED_TRACE(dtype);
    const auto dir = dir_.path() / ("r64_" + dtype);
    write_adapter(spec, dir, dtype);
    auto a = LoraAdapter::load(dir.string(), config_, backend_.get(), 64);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    EXPECT_EQ((*a)->dtype(), dtype == "BF16" ? DType::kBF16 : DType::kF32);
    EXPECT_GE((*a)->bytes(), 81'920u * dtype_size((*a)->dtype()));
    auto stored = [&](float v) {
      if (dtype == "BF16") return as_bf16(v);
      if (dtype == "F16") return f16_to_f32(f32_to_f16(v));
      return v;
    };
    // 2 layers x rank 64 x (in + out) of the seven
    EXPECT_EQ(expect_values(**a, spec, config_, stored), 81'920u);
  }
}

// --lora-dtype f32 widens a BF16 file exactly; --lora-dtype bf16 rounds F32 and F16 files to the
// nearest bf16, and refuses a value that rounds past bf16's largest.
TEST_F(LoraAdapterTest, LoraDtypeFlagChoosesTheStoredDtype) {
  const AdapterSpec spec = make_adapter_spec(config_, 64, 23);
  for (const DType want : {DType::kF32, DType::kBF16}) {
    const auto backend = kernels::create_cpu_backend(1, std::nullopt, want);
    for (const std::string dtype : {"F32", "BF16", "F16"}) {
      SCOPED_TRACE(std::string(dtype_name(want)) + " from " + dtype);
      const auto dir = dir_.path() / ("flag_" + dtype);
      write_adapter(spec, dir, dtype);
      auto a = LoraAdapter::load(dir.string(), config_, backend.get(), 64);
      ASSERT_TRUE(a.ok()) << a.status().to_string();
      EXPECT_EQ((*a)->dtype(), want);
      auto stored = [&](float v) {
        const float in_file = dtype == "BF16"  ? as_bf16(v)
                              : dtype == "F16" ? f16_to_f32(f32_to_f16(v))
                                               : v;
        return want == DType::kBF16 ? as_bf16(in_file) : in_file;
      };
      EXPECT_EQ(expect_values(**a, spec, config_, stored), 81'920u);
    }
  }
  const auto bf16 = kernels::create_cpu_backend(1, std::nullopt, DType::kBF16);
  AdapterSpec huge = make_adapter_spec(config_, 4, 24);
  huge.tensors[peft_name(0, Projection::kV, 'B')].second[3] = 3.4e38f;  // finite in f32 only
  write_adapter(huge, dir_.path() / "huge");
  auto a = LoraAdapter::load((dir_.path() / "huge").string(), config_, bf16.get(), 64);
  ASSERT_FALSE(a.ok());
  expect_message(a.status(), StatusCode::kInvalidArgument, "does not fit in BF16");
  expect_message(a.status(), StatusCode::kInvalidArgument, "layers.0.self_attn.v_proj.lora_B");
}

TEST_F(LoraAdapterTest, NonFiniteValuePastTheFirstChunkIsFoundWhereItIs) {
  for (const std::string dtype : {"F32", "BF16", "F16"}) {
    SCOPED_TRACE(dtype);
    AdapterSpec spec = make_adapter_spec(config_, 64, 22);
    spec.tensors[peft_name(1, Projection::kDown, 'A')].second[5000] = NAN;
    const auto dir = dir_.path() / ("nan_" + dtype);
    write_adapter(spec, dir, dtype);
    auto a = LoraAdapter::load(dir.string(), config_, backend_.get(), 64);
    ASSERT_FALSE(a.ok());
    expect_message(a.status(), StatusCode::kInvalidArgument,
                   "non-finite value (nan) at element 5000");
    expect_message(a.status(), StatusCode::kInvalidArgument, "layers.1.mlp.down_proj.lora_A");
  }
}

TEST_F(LoraAdapterTest, UnsupportedFeaturesSayWhat) {
  struct Case {
    const char* key;
    nlohmann::ordered_json value;
    const char* expect;
  } cases[] = {{"use_dora", true, "DoRA"},
               {"modules_to_save", {"score"}, "modules_to_save"},
               {"bias", "lora_only", "bias"},
               {"target_modules", {"q_proj", "embed_tokens"}, "embed_tokens"},
               {"target_modules", {"lm_head"}, "lm_head"}};
  for (const auto& c : cases) {
    AdapterSpec spec = make_adapter_spec(config_, 4, 9);
    spec.config[c.key] = c.value;
    expect_message(load_bad(spec), StatusCode::kInvalidArgument, c.expect);
  }
  AdapterSpec emb = make_adapter_spec(config_, 4, 9);
  emb.tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = {
      {4, 256}, std::vector<float>(1024, 0.f)};
  expect_message(load_bad(emb), StatusCode::kInvalidArgument, "embed_tokens is not supported");
  AdapterSpec head = make_adapter_spec(config_, 4, 9);
  head.tensors["base_model.model.lm_head.lora_A.weight"] = {{4, 32}, std::vector<float>(128, 0.f)};
  expect_message(load_bad(head), StatusCode::kInvalidArgument, "lm_head is not supported");
}

TEST_F(LoraAdapterTest, RankZeroAndRankAboveTheMaximum) {
  AdapterSpec zero = make_adapter_spec(config_, 4, 10);
  zero.config["r"] = 0;
  expect_message(load_bad(zero), StatusCode::kInvalidArgument, "r must be positive");
  expect_message(load_bad(make_adapter_spec(config_, 64, 10)), StatusCode::kInvalidArgument,
                 "above the server's maximum LoRA rank 32");
}

TEST_F(LoraAdapterTest, StrayAndMissingTensors) {
  AdapterSpec missing = make_adapter_spec(config_, 4, 11);
  missing.tensors.erase(peft_name(1, Projection::kGate, 'B'));
  expect_message(load_bad(missing), StatusCode::kInvalidArgument, "lora_B.weight");
  AdapterSpec stray = make_adapter_spec(config_, 4, 11);
  stray.config["target_modules"] = {"q_proj"};
  expect_message(load_bad(stray), StatusCode::kInvalidArgument, "does not target");
  AdapterSpec odd = make_adapter_spec(config_, 4, 11);
  odd.tensors["something.else"] = {{1}, {0.f}};
  expect_message(load_bad(odd), StatusCode::kInvalidArgument, "not a PEFT LoRA tensor");
}

TEST_F(LoraAdapterTest, MalformedSafetensors) {
  const auto dir = dir_.path() / "truncated";
  write_adapter(make_adapter_spec(config_, 4, 12), dir);
  std::filesystem::resize_file(dir / "adapter_model.safetensors", 100);
  expect_message(load_bad_dir(dir.string()), StatusCode::kInvalidArgument,
                 "adapter_model.safetensors");
}

}  // namespace
}  // namespace loraserve::adapters
