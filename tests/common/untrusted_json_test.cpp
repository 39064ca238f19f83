// parse_untrusted_json / read_json_file: size and depth caps checked before parsing (a million
// levels are refused without recursion), syntax errors name the source and the byte offset, and
// no message echoes more than an excerpt of the input.
#include "common/untrusted_json.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace loraserve {
namespace {

void expect_error(const std::string& text, std::initializer_list<std::string> parts,
                  const JsonLimits& limits = JsonLimits{}) {
  auto j = parse_untrusted_json(text, "src.json", limits);
  ASSERT_FALSE(j.ok()) << text.substr(0, 100);
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  const std::string& m = j.status().message();
  EXPECT_TRUE(m.starts_with("src.json: ")) << m;
  EXPECT_LT(m.size(), 400u) << m;
  for (const auto& p : parts)
    EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in " << m;
}

TEST(UntrustedJsonTest, ParsesValidJson) {
  auto j = parse_untrusted_json(R"({"a": [1, {"b": "c\"]"}]})", "x");
  ASSERT_TRUE(j.ok()) << j.status().to_string();
  EXPECT_EQ((*j)["a"][1]["b"], "c\"]");
  auto o = parse_untrusted_json<nlohmann::ordered_json>(R"({"z": 1, "a": 2})", "x");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->begin().key(), "z");
}

TEST(UntrustedJsonTest, DepthIsCappedWithoutRecursion) {
  JsonLimits limits;
  limits.max_depth = 3;
  EXPECT_TRUE(parse_untrusted_json("[[[1]]]", "x", limits).ok());
  EXPECT_TRUE(parse_untrusted_json(R"({"a": {"b": [1]}})", "x", limits).ok());
  // Brackets inside strings do not count, escaped quotes do not end a string.
  EXPECT_TRUE(parse_untrusted_json(R"([["[[[[\"[[[[", "{{{{"]])", "x", limits).ok());
  expect_error("[[[[1]]]]", {"deeper than 3 levels", "byte 3", "--max-json-depth"}, limits);
  // A million levels, with the default limit.
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  expect_error(deep, {"deeper than 64 levels", "byte 64"});
  const std::string deep_objects = [] {
    std::string s;
    for (int i = 0; i < 1000000; ++i) s += "{\"a\":";
    return s;
  }();
  expect_error(deep_objects, {"deeper than 64 levels"});
}

TEST(UntrustedJsonTest, ANulByteIsRefusedWhereverItIs) {
  // nlohmann reads up to a NUL and takes it for the end: what follows would pass unseen.
  expect_error(std::string("{\"a\": 1}\0garbage {{{", 20), {"NUL byte at byte 8"});
  expect_error(std::string("{\"a\": \"x\0y\"}", 13), {"NUL byte at byte 8"});
}

TEST(UntrustedJsonTest, SizeIsCapped) {
  JsonLimits limits;
  limits.max_bytes = 10;
  expect_error("[1,2,3,4,5,6]", {"13 bytes", "--max-json-bytes"}, limits);
}

TEST(UntrustedJsonTest, SyntaxErrorsNameTheOffsetAndCutTheInput) {
  expect_error("", {"not valid JSON", "byte 1"});
  expect_error("{\"a\": tru}", {"line 1, column 10", "byte 10"});
  // A long string with a control character in it: the lexer's "last read" would be all of it.
  const std::string long_string = "[\"" + std::string(100000, 'x') + "\x01\"]";
  expect_error(long_string, {"not valid JSON", "bytes)"});
  expect_error("[1] trailing", {"not valid JSON"});
  expect_error("[\"\xff\"]", {"not valid JSON"});
  expect_error("[1e999]", {"not valid JSON"});
  expect_error("[" + std::string(100000, '9') + "e999999]", {"not valid JSON"});
  // Comments are not JSON.
  expect_error("{} // note", {"not valid JSON"});
}

TEST(UntrustedJsonTest, LimitsAreValidated) {
  EXPECT_TRUE(validate_json_limits(JsonLimits{}).ok());
  EXPECT_FALSE(validate_json_limits(JsonLimits{.max_bytes = 1, .max_depth = 0}).ok());
  EXPECT_FALSE(
      validate_json_limits(JsonLimits{.max_bytes = 1, .max_depth = kMaxJsonDepthCeiling + 1}).ok());
  EXPECT_FALSE(validate_json_limits(JsonLimits{.max_bytes = 0, .max_depth = 5}).ok());
  const auto config_zero = validate_json_limits(JsonLimits{.max_config_bytes = 0});
  ASSERT_FALSE(config_zero.ok());
  EXPECT_NE(config_zero.message().find("--max-config-bytes"), std::string::npos);
  const JsonLimits before = json_limits();
  set_json_limits(JsonLimits{.max_bytes = 100, .max_config_bytes = 7, .max_depth = 2});
  EXPECT_EQ(json_limits().max_config_bytes, 7u);
  EXPECT_FALSE(parse_untrusted_json("[[[1]]]", "x").ok());
  set_json_limits(before);
  EXPECT_TRUE(parse_untrusted_json("[[[1]]]", "x").ok());
}

TEST(UntrustedJsonTest, ConfigFilesHaveTheSmallerCapAndItsFlag) {
  EXPECT_EQ(JsonLimits{}.max_config_bytes, 1u << 20);
  const ConfigFileCap own = config_file_cap(JsonLimits{.max_bytes = 100, .max_config_bytes = 10});
  EXPECT_EQ(own.bytes, 10u);
  EXPECT_EQ(own.flag, "--max-config-bytes");
  // --max-json-bytes below --max-config-bytes caps every JSON file, and says so.
  const ConfigFileCap general =
      config_file_cap(JsonLimits{.max_bytes = 100, .max_config_bytes = 1000});
  EXPECT_EQ(general.bytes, 100u);
  EXPECT_EQ(general.flag, "--max-json-bytes");
}

TEST(UntrustedJsonTest, ReadsFilesThroughTheirChecks) {
  const auto dir = std::filesystem::temp_directory_path() / ("ls_json_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "ok.json") << R"({"x": 1})";
  std::ofstream(dir / "bad.json") << R"({"x": )";
  auto ok = read_json_file((dir / "ok.json").string());
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)["x"], 1);
  auto bad = read_json_file((dir / "bad.json").string());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("bad.json"), std::string::npos);
  auto zero = read_json_file("/dev/zero");
  EXPECT_EQ(zero.status().code(), StatusCode::kInvalidArgument);
  auto missing = read_json_file((dir / "missing.json").string());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace loraserve
