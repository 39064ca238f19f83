// Hugging Face config.json and generation_config.json: every fixture architecture parsed as
// transformers reads it, and every bad config refused with an error naming the file and field.
#include "formats/hf_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "formats/safetensors.h"

namespace loraserve::formats {
namespace {

using nlohmann::json;

constexpr const char* kFixtures = "tests/reference/fixtures/";

ModelConfig load_fixture(const std::string& name) {
  auto c = load_model_config(kFixtures + name);
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : ModelConfig{};
}

json minimal_llama() {
  return json{{"architectures", {"LlamaForCausalLM"}},
              {"hidden_size", 64},
              {"intermediate_size", 128},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"vocab_size", 100},
              {"max_position_embeddings", 256}};
}

// Expects parse_model_config(j) to fail with INVALID_ARGUMENT naming the source and `words`.
void expect_invalid(const json& j, std::initializer_list<const char*> words) {
  auto c = parse_model_config(j.dump(), "some/config.json");
  ASSERT_FALSE(c.ok()) << j.dump();
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << c.status().to_string();
  EXPECT_NE(c.status().message().find("some/config.json"), std::string::npos)
      << c.status().to_string();
  for (const char* w : words)
    EXPECT_NE(c.status().message().find(w), std::string::npos) << c.status().to_string();
}

TEST(HfConfigTest, LlamaWithGenerationConfigEosList) {
  const ModelConfig c = load_fixture("llama_mha_f32");
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.architecture_name, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.intermediate_size, 96);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);  // hidden_size / num_attention_heads
  EXPECT_EQ(c.vocab_size, 256);
  EXPECT_EQ(c.max_context, 128);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias || c.qk_norm);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(c.bos_token_id, 0);
  // config.json says 1; generation_config.json adds 2 (an instruct model's end of turn).
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(c.torch_dtype, "float32");
}

TEST(HfConfigTest, Llama3RopeScalingAndGqa) {
  const ModelConfig c = load_fixture("llama_gqa_bf16_llama3rope");
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.kv_dim(), 24);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{2}));
}

TEST(HfConfigTest, LlamaBiasesAndLinearRope) {
  const ModelConfig c = load_fixture("llama_bias_linrope_f32");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
  EXPECT_TRUE(c.mlp_bias);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLinear);  // spelled "type", not "rope_type"
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
}

TEST(HfConfigTest, Transformers5RopeParameters) {
  // transformers 5 writes rope_theta and the scaling in one rope_parameters object.
  json j = minimal_llama();
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                          {"factor", 8.0},           {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  auto c = parse_model_config(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 64);
  j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 10.0}, {"factor", 16.0}};
  c = parse_model_config(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_DOUBLE_EQ(c->rope_theta, 10.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 16.0);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  c = parse_model_config(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_DOUBLE_EQ(c->rope_theta, 1000000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
  // What is not served is refused by name, not run as plain RoPE.
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 4.0}};
  expect_invalid(j, {"rope_parameters", "yarn"});
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 1e4}}}};
  expect_invalid(j, {"rope_parameters", "full_attention"});
  j["rope_parameters"] = 5;
  expect_invalid(j, {"rope_parameters"});
}

TEST(HfConfigTest, Qwen2HasQkvBiasOnly) {
  const ModelConfig c = load_fixture("qwen2_sharded_f16");
  EXPECT_EQ(c.architecture, Architecture::kQwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.max_context, 128);  // use_sliding_window false: the window does not cap it
  EXPECT_EQ(c.torch_dtype, "float16");
}

TEST(HfConfigTest, Qwen3ExplicitHeadDimAndQkNorm) {
  const ModelConfig c = load_fixture("qwen3_headdim_bf16");
  EXPECT_EQ(c.architecture, Architecture::kQwen3);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.head_dim, 16);  // not 32 / 4
  EXPECT_EQ(c.q_dim(), 64);
  EXPECT_EQ(c.kv_dim(), 32);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
}

TEST(HfConfigTest, DefaultHeadDimFollowsTransformers) {
  json j = minimal_llama();
  auto c = parse_model_config(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->head_dim, 16);  // LlamaConfig: hidden_size / num_attention_heads
  j["architectures"] = {"Qwen3ForCausalLM"};
  c = parse_model_config(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->head_dim, 128);  // Qwen3Config: 128 whatever the hidden size
}

TEST(HfConfigTest, ParameterCountIsWhatTheCheckpointHolds) {
  int models = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kFixtures)) {
    const std::string name = entry.path().filename().string();
    const ModelConfig c = load_fixture(name);
    auto store = TensorStore::open_folder(entry.path().string(), "model.safetensors");
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    int64_t total = 0;
    for (const std::string& t : (*store)->names()) total += (*store)->find(t)->numel();
    EXPECT_EQ(c.parameter_count(), total) << name;
    ++models;
  }
  EXPECT_GE(models, 5);
}

TEST(HfConfigTest, MistralSlidingWindowCapsTheContext) {
  json j = minimal_llama();
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 100;
  auto c = parse_model_config(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->architecture, Architecture::kMistral);
  EXPECT_EQ(c->max_position_embeddings, 256);
  EXPECT_EQ(c->max_context, 100);
  j["sliding_window"] = nullptr;  // Mistral v0.2 and later
  c = parse_model_config(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->max_context, 256);
}

TEST(HfConfigTest, MissingRequiredField) {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "vocab_size", "max_position_embeddings"}) {
    json j = minimal_llama();
    j.erase(field);
    expect_invalid(j, {"missing field", field});
  }
  json j = minimal_llama();
  j.erase("architectures");
  expect_invalid(j, {"architectures"});
}

TEST(HfConfigTest, UnsupportedArchitecture) {
  json j = minimal_llama();
  j["architectures"] = {"GPT2LMHeadModel"};
  expect_invalid(j, {"'GPT2LMHeadModel'", "not supported", "LlamaForCausalLM"});
}

TEST(HfConfigTest, InvalidValues) {
  json j = minimal_llama();
  j["hidden_size"] = -64;
  expect_invalid(j, {"hidden_size", "positive integer"});
  j = minimal_llama();
  j["num_key_value_heads"] = 3;
  expect_invalid(j, {"num_attention_heads", "num_key_value_heads"});
  j = minimal_llama();
  j["head_dim"] = 15;
  expect_invalid(j, {"head_dim", "even"});
  j = minimal_llama();
  j["hidden_act"] = "gelu";
  expect_invalid(j, {"hidden_act", "gelu"});
  j = minimal_llama();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_invalid(j, {"rope_scaling", "yarn"});
  j = minimal_llama();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  expect_invalid(j, {"original_max_position_embeddings"});
  j = minimal_llama();
  j["rope_scaling"] = {{"factor", 4.0}};  // no type: transformers cannot build it either
  expect_invalid(j, {"rope_scaling", "rope_type"});
  j = minimal_llama();
  j["rope_scaling"] = {{"type", ""}, {"factor", 4.0}};
  expect_invalid(j, {"rope_scaling", "rope_type"});
  j = minimal_llama();
  j["rope_theta"] = 1e-300;  // its frequencies overflow f32
  expect_invalid(j, {"rope_theta"});
  j = minimal_llama();
  j["rms_norm_eps"] = 1e300;
  expect_invalid(j, {"rms_norm_eps"});
  j = minimal_llama();
  j["eos_token_id"] = {2, 100};
  expect_invalid(j, {"eos_token_id", "100"});
  j = minimal_llama();
  j["tie_word_embeddings"] = "yes";
  expect_invalid(j, {"tie_word_embeddings"});
  expect_invalid(json::array({1, 2}), {"not a JSON object"});
}

TEST(HfConfigTest, GenerationConfigMerge) {
  json j = minimal_llama();
  j.erase("bos_token_id");
  j["eos_token_id"] = 7;
  auto c = parse_model_config(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->bos_token_id, -1);
  ASSERT_TRUE(merge_generation_config(R"({"bos_token_id": 1, "eos_token_id": [7, 9, 11]})",
                                      "generation_config.json", &*c)
                  .ok());
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{7, 9, 11}));  // union, no duplicates
  EXPECT_EQ(c->bos_token_id, 1);
  ASSERT_TRUE(merge_generation_config(R"({"eos_token_id": 5})", "g.json", &*c).ok());
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{7, 9, 11, 5}));

  const ModelConfig before = *c;
  Status bad = merge_generation_config(R"({"eos_token_id": [3, 500]})", "gen/g.json", &*c);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("gen/g.json"), std::string::npos) << bad.to_string();
  EXPECT_NE(bad.message().find("500"), std::string::npos) << bad.to_string();
  EXPECT_EQ(c->eos_token_ids, before.eos_token_ids);  // unchanged by the failed merge
  EXPECT_FALSE(merge_generation_config("not json", "g.json", &*c).ok());
}

TEST(HfConfigTest, MissingFolder) {
  auto c = load_model_config("tests/reference/fixtures/no_such_model");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("no_such_model"), std::string::npos);
}

}  // namespace
}  // namespace loraserve::formats
