#include "formats/peft_config.h"

#include <gtest/gtest.h>

namespace loraserve::formats {
namespace {

PeftConfig parse(const std::string& text) {
  auto c = parse_peft_config(text, "adapter_config.json");
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : PeftConfig{};
}

Status parse_error(const std::string& text) {
  return parse_peft_config(text, "adapter_config.json").status();
}

TEST(PeftConfig, ListTargetsMatchWholeKeyOrLastParts) {
  PeftConfig c = parse(
      R"({"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj","mlp.up_proj"]})");
  EXPECT_TRUE(*peft_targets(c, "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(*peft_targets(c, "model.layers.5.mlp.up_proj"));
  EXPECT_FALSE(*peft_targets(c, "model.layers.0.self_attn.k_proj"));
  EXPECT_FALSE(*peft_targets(c, "model.layers.0.self_attn.xq_proj"));  // suffix must follow a dot
  EXPECT_DOUBLE_EQ(peft_scale(c, 8, 16), 2.0);
}

TEST(PeftConfig, AllLinearShorthandIsEveryProjectionButNotTheHead) {
  for (const char* spelling : {R"("all-linear")", R"("ALL-LINEAR")", R"(["all-linear"])"}) {
    SCOPED_TRACE(spelling);
    PeftConfig c =
        parse(std::string(R"({"peft_type":"LORA","r":4,"target_modules":)") + spelling + "}");
    EXPECT_TRUE(*peft_targets(c, "model.layers.0.self_attn.q_proj"));
    EXPECT_TRUE(*peft_targets(c, "model.layers.3.mlp.down_proj"));
    EXPECT_FALSE(*peft_targets(c, "lm_head"));
  }
}

TEST(PeftConfig, RegexTargetsMustMatchTheWholeKey) {
  PeftConfig c =
      parse(R"({"peft_type":"LORA","r":4,"target_modules":".*\\.layers\\.1\\..*(q|v)_proj"})");
  EXPECT_TRUE(*peft_targets(c, "model.layers.1.self_attn.v_proj"));
  EXPECT_FALSE(*peft_targets(c, "model.layers.0.self_attn.v_proj"));
  EXPECT_FALSE(*peft_targets(c, "model.layers.11.self_attn.o_proj"));
}

TEST(PeftConfig, LayersToTransformUsesTheLayerIndexOfTheKey) {
  PeftConfig c = parse(
      R"({"peft_type":"LORA","r":4,"target_modules":["q_proj"],"layers_to_transform":[1,3]})");
  EXPECT_FALSE(*peft_targets(c, "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(*peft_targets(c, "model.layers.1.self_attn.q_proj"));
  EXPECT_TRUE(*peft_targets(c, "model.layers.3.self_attn.q_proj"));
  EXPECT_FALSE(*peft_targets(c, "model.layers.13.self_attn.q_proj"));
  PeftConfig one =
      parse(R"({"peft_type":"LORA","r":4,"target_modules":["q_proj"],"layers_to_transform":2,
                              "layers_pattern":"layers"})");
  EXPECT_TRUE(*peft_targets(one, "model.layers.2.self_attn.q_proj"));
  EXPECT_FALSE(*peft_targets(one, "model.layers.1.self_attn.q_proj"));
}

TEST(PeftConfig, RankAndAlphaPatternsFollowGetPatternKeyInFileOrder) {
  PeftConfig c =
      parse(R"({"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj","v_proj"],
      "rank_pattern":{"layers.1.self_attn.v_proj":4,"v_proj":12},"alpha_pattern":{"q_proj":3}})");
  EXPECT_EQ(peft_rank_and_alpha(c, "model.layers.1.self_attn.v_proj")->first, 4);
  EXPECT_EQ(peft_rank_and_alpha(c, "model.layers.0.self_attn.v_proj")->first, 12);
  EXPECT_EQ(peft_rank_and_alpha(c, "model.layers.0.self_attn.q_proj")->first, 8);
  EXPECT_DOUBLE_EQ(peft_rank_and_alpha(c, "model.layers.0.self_attn.q_proj")->second, 3.0);
  EXPECT_DOUBLE_EQ(peft_rank_and_alpha(c, "model.layers.0.self_attn.v_proj")->second, 16.0);
  // A pattern matches a whole trailing dotted part, not the middle of a name.
  EXPECT_EQ(peft_rank_and_alpha(c, "model.layers.0.self_attn.xv_proj")->first, 8);
}

TEST(PeftConfig, RsLoraScalesBySquareRoot) {
  PeftConfig c = parse(
      R"({"peft_type":"LORA","r":16,"lora_alpha":8,"use_rslora":true,"target_modules":["q_proj"]})");
  EXPECT_DOUBLE_EQ(peft_scale(c, 16, 8), 2.0);
}

TEST(PeftConfig, ExcludeModulesWin) {
  PeftConfig c = parse(
      R"({"peft_type":"LORA","r":4,"target_modules":["q_proj"],"exclude_modules":["layers.0.self_attn.q_proj"]})");
  EXPECT_FALSE(*peft_targets(c, "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(*peft_targets(c, "model.layers.1.self_attn.q_proj"));
}

TEST(PeftConfig, RefusesWhatIsNotSupportedByName) {
  const std::string base = R"("peft_type":"LORA","r":8,"target_modules":["q_proj"])";
  struct Case {
    std::string extra, expect;
  } cases[] = {
      {R"("use_dora":true)", "DoRA"},
      {R"("alora_invocation_tokens":[265,73])", "alora_invocation_tokens"},
      {R"("modules_to_save":["lm_head"])", "modules_to_save"},
      {R"("bias":"all")", "bias"},
      {R"("lora_bias":true)", "lora_bias"},
      {R"("layer_replication":[[0,1]])", "layer_replication"},
  };
  for (const auto& c : cases) {
    Status st = parse_error("{" + base + "," + c.extra + "}");
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.extra;
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << st.message();
  }
  EXPECT_NE(parse_error(R"({"peft_type":"PREFIX_TUNING","r":8})").message().find("PREFIX_TUNING"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"peft_type":"LORA","r":0,"target_modules":["q_proj"]})")
                .message()
                .find("r must be positive"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"peft_type":"LORA","r":8})").message().find("target_modules"),
            std::string::npos);
  EXPECT_NE(parse_error("not json").message().find("not valid JSON"), std::string::npos);
  EXPECT_NE(parse_error("[1]").message().find("not a JSON object"), std::string::npos);
}

TEST(PeftConfig, BadRegexNamesTheFileAndTheField) {
  const std::string base = R"("peft_type":"LORA","r":4)";
  const std::pair<std::string, std::string> cases[] = {
      {R"("target_modules":"(unclosed")", "target_modules"},
      {R"("target_modules":["q_proj"],"exclude_modules":"[z-a]")", "exclude_modules"},
      {R"("target_modules":["q_proj"],"rank_pattern":{"q_proj":4,"(bad":8})",
       "rank_pattern['(bad']"},
      {R"("target_modules":["q_proj"],"alpha_pattern":{"*x":2})", "alpha_pattern['*x']"},
      {R"("target_modules":["q_proj"],"layers_to_transform":[0],"layers_pattern":"(")",
       "layers_pattern"},
  };
  for (const auto& [extra, field] : cases) {
    Status st = parse_error("{" + base + "," + extra + "}");
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << extra;
    EXPECT_TRUE(
        st.message().starts_with("adapter_config.json: " + field + ": invalid regular expression"))
        << st.message();
  }
}

TEST(PeftConfig, NumbersAreRangeChecked) {
  const std::string base = R"("peft_type":"LORA","target_modules":["q_proj"])";
  const std::pair<std::string, std::string> cases[] = {
      {R"("r":4294967297)", "r must be positive"},
      {R"("r":-3)", "r must be positive"},
      {R"("r":4.5)", "r must be positive"},
      {R"("r":4,"lora_alpha":1e999)", "not valid JSON"},
      {R"("r":4,"lora_alpha":"16")", "lora_alpha must be a finite number"},
      {R"("r":4,"rank_pattern":{"q_proj":0})", "rank_pattern['q_proj'] must be a rank"},
      {R"("r":4,"rank_pattern":{"q_proj":18446744073709551615})", "rank_pattern['q_proj']"},
      {R"("r":4,"alpha_pattern":{"q_proj":null})", "alpha_pattern['q_proj'] must be a finite"},
      {R"("r":4,"layers_to_transform":[-1])", "layers_to_transform"},
      {R"("r":4,"layers_to_transform":[9223372036854775808])", "layers_to_transform"},
      {R"("r":4,"use_rslora":"yes")", "use_rslora"},
  };
  for (const auto& [extra, expect] : cases) {
    Status st = parse_error("{" + base + "," + extra + "}");
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << extra;
    EXPECT_NE(st.message().find(expect), std::string::npos) << st.message();
  }
}

TEST(PeftConfig, CatastrophicBacktrackingFailsInsteadOfHanging) {
  PeftConfig c = parse(R"({"peft_type":"LORA","r":4,"target_modules":"(a|aa)+\\d"})");
  auto r = peft_targets(c, std::string(40, 'a'));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("target_modules"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace loraserve::formats
