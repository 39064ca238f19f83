// excerpt() and json_excerpt(): bounded, escaped, valid UTF-8, with the length when cut.
#include "common/excerpt.h"

#include <gtest/gtest.h>

#include <string>

namespace loraserve {
namespace {

// Whether `s` is valid UTF-8 with no byte below 0x20 and no DEL.
bool printable_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x20 || b == 0x7F) return false;
    size_t n = b < 0x80             ? 1
               : (b & 0xE0) == 0xC0 ? 2
               : (b & 0xF0) == 0xE0 ? 3
               : (b & 0xF8) == 0xF0 ? 4
                                    : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

TEST(ExcerptTest, ShortTextIsQuotedWhole) {
  EXPECT_EQ(excerpt("abc"), "'abc'");
  EXPECT_EQ(excerpt(""), "''");
  EXPECT_EQ(excerpt("h\u00e9llo \u2603"), "'h\u00e9llo \u2603'");
}

TEST(ExcerptTest, LongTextIsCutWithItsLength) {
  const std::string text(1234, 'a');
  EXPECT_EQ(excerpt(text, 4), "'aaaa…' (1234 bytes)");
  EXPECT_EQ(excerpt(text), "'" + std::string(64, 'a') + "…' (1234 bytes)");
}

TEST(ExcerptTest, EscapesControlsQuotesAndInvalidBytes) {
  EXPECT_EQ(excerpt("a\nb\r\t\\'"), "'a\\nb\\r\\t\\\\\\''");
  EXPECT_EQ(excerpt(std::string("x\0y", 3)), "'x\\x00y'");
  EXPECT_EQ(excerpt("\x1b[31m"), "'\\x1B[31m'");
  EXPECT_EQ(excerpt("\x7f"), "'\\x7F'");
  EXPECT_EQ(excerpt("\xff\xfe"), "'\\xFF\\xFE'");
  EXPECT_EQ(excerpt("\xc3"), "'\\xC3'");                    // truncated sequence
  EXPECT_EQ(excerpt("\xc0\xaf"), "'\\xC0\\xAF'");           // overlong '/'
  EXPECT_EQ(excerpt("\xed\xa0\x80"), "'\\xED\\xA0\\x80'");  // a surrogate
  EXPECT_EQ(excerpt("a\u2028b\u202e"), "'a\\u2028b\\u202E'");
  EXPECT_EQ(excerpt("\u0085"), "'\\u0085'");
}

TEST(ExcerptTest, NeverSplitsACharacterOrAnEscape) {
  // 3-byte characters: a 64-byte budget holds 21 of them.
  std::string snowmen;
  for (int i = 0; i < 100; ++i) snowmen += "\u2603";
  const std::string e = excerpt(snowmen);
  EXPECT_TRUE(printable_utf8(e)) << e;
  EXPECT_EQ(e.find("(300 bytes)") != std::string::npos, true) << e;
  // Escapes are 4 bytes: never cut in the middle.
  const std::string controls(100, '\x01');
  const std::string c = excerpt(controls, 10);
  EXPECT_EQ(c, "'\\x01\\x01…' (100 bytes)");
}

TEST(ExcerptTest, EveryInputGivesABoundedPrintableLine) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  for (size_t start = 0; start < all.size(); start += 7) {
    const std::string e = excerpt(all.substr(start), 40);
    EXPECT_TRUE(printable_utf8(e)) << e;
    EXPECT_LE(e.size(), 40u + 30u) << e;
  }
}

TEST(JsonExcerptTest, ShortValuesAreCompactJson) {
  EXPECT_EQ(json_excerpt(nlohmann::json::parse(R"({"a": [1, 2.5, "x"], "b": null})")),
            R"({"a":[1,2.5,"x"],"b":null})");
  EXPECT_EQ(json_excerpt(nlohmann::json("line\nbreak")), "\"line\\nbreak\"");
}

TEST(JsonExcerptTest, DeepAndLargeValuesAreCutWithoutWalkingThemWhole) {
  // 100000 levels built in memory (the parser would refuse them): the excerpt stops at the
  // budget instead of recursing through every level.
  nlohmann::json deep = nlohmann::json::array();
  for (int i = 0; i < 100000; ++i) {
    nlohmann::json outer = nlohmann::json::array();
    outer.push_back(std::move(deep));
    deep = std::move(outer);
  }
  const std::string d = json_excerpt(deep, 16);
  EXPECT_EQ(d, std::string(16, '[') + "… (an array of 1 items)");

  nlohmann::json big = nlohmann::json::array();
  for (int i = 0; i < 10000; ++i) big.push_back(i);
  EXPECT_EQ(json_excerpt(big, 10), "[0,1,2,3,4… (an array of 10000 items)");

  const std::string s = json_excerpt(nlohmann::json(std::string(5000, 'z')), 8);
  EXPECT_EQ(s, "\"zzzzzzz… (a string of 5000 bytes)");

  nlohmann::ordered_json ordered = {{"k", std::string(100, '\n')}};
  const std::string o = json_excerpt(ordered, 20);
  EXPECT_TRUE(printable_utf8(o)) << o;
  EXPECT_NE(o.find("an object of 1 keys"), std::string::npos) << o;
}

}  // namespace
}  // namespace loraserve
