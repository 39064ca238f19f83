// The tokenizer's stages one by one: UTF-8 helpers, pattern translation, normalizers,
// pre-tokenizers (every Split behavior, Digits, Metaspace, ByteLevel) and decoders, with the
// Hugging Face documentation's examples as expected values.
#include <gtest/gtest.h>

#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

using Strings = std::vector<std::string>;

TEST(Utf8Test, FindsTheFirstInvalidByte) {
  EXPECT_EQ(find_invalid_utf8("plain ascii"), std::nullopt);
  EXPECT_EQ(find_invalid_utf8("h\xC3\xA9 \xF0\x9F\x98\x80"), std::nullopt);
  EXPECT_EQ(find_invalid_utf8("ab\xFF"), 2u);
  EXPECT_EQ(find_invalid_utf8("a\xC3"), 1u);             // truncated
  EXPECT_EQ(find_invalid_utf8("\xED\xA0\x80"), 0u);      // a surrogate
  EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);          // overlong
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
}

TEST(Utf8Test, ReplacesEachMaximalSubpartOnce) {
  const std::string r(kReplacementUtf8);
  EXPECT_EQ(decode_utf8_lossy("a\xE4\xB8"
                              "b"),
            "a" + r + "b");  // one U+FFFD for E4 B8
  EXPECT_EQ(decode_utf8_lossy("\xE4\xB8"), r);
  EXPECT_EQ(decode_utf8_lossy("\xFF\xFE"), r + r);
  EXPECT_EQ(decode_utf8_lossy("\xE4\xB8\x80"), "\xE4\xB8\x80");
}

TEST(Utf8Test, ByteLevelAlphabetIsGpt2s) {
  const ByteLevelAlphabet& a = ByteLevelAlphabet::get();
  EXPECT_EQ(a.encode(' '), "\u0120");   // Ġ
  EXPECT_EQ(a.encode('\n'), "\u010A");  // Ċ
  EXPECT_EQ(a.encode('A'), "A");
  EXPECT_EQ(a.encode(0xAD), "\u0143");  // the soft hyphen is not printable
  for (int b = 0; b < 256; ++b) {
    size_t pos = 0;
    const std::string_view c = a.encode(static_cast<uint8_t>(b));
    EXPECT_EQ(a.decode(next_code_point(c, &pos)), b);
  }
  EXPECT_EQ(a.decode(0x4E00), std::nullopt);
}

TEST(RegexTest, TranslatesJavaScriptSpaceAndContractions) {
  EXPECT_EQ(*translate_pattern("\\s+"), "[\\t\\n\\x0B\\f\\r\\x{FEFF}\\p{Z}]+");
  EXPECT_EQ(*translate_pattern("[^\\s\\p{L}]"), "[^\\t\\n\\x0B\\f\\r\\x{FEFF}\\p{Z}\\p{L}]");
  EXPECT_EQ(*translate_pattern("\\s+(?!\\S)"),
            "[\\t\\n\\x0B\\f\\r\\x{FEFF}\\p{Z}]+(?![^\\t\\n\\x0B\\f\\r\\x{FEFF}\\p{Z}])");
  EXPECT_EQ(*translate_pattern("[\\u4e00-\\u9fa5]"), "[\\x{4e00}-\\x{9fa5}]");
  EXPECT_EQ(*translate_pattern("(?i:'s|'t|'re|'ve|'m|'ll|'d)"),
            "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))");
  EXPECT_FALSE(translate_pattern("[\\S]").ok());
}

TEST(RegexTest, FindsMatchesAndSkipsEmptyOnes) {
  auto re = Regex::compile("\\s+|x*", "test");
  ASSERT_TRUE(re.ok()) << re.status().to_string();
  auto matches = (*re)->find_all("ab  xxc\u3000\ufeff\u0085");
  ASSERT_TRUE(matches.ok());
  // "  " at 2, "xx" at 4, then U+3000 and U+FEFF (JavaScript white space) but not U+0085.
  ASSERT_EQ(matches->size(), 3u);
  EXPECT_EQ((*matches)[0].begin, 2u);
  EXPECT_EQ((*matches)[1].begin, 4u);
  EXPECT_EQ((*matches)[2].end - (*matches)[2].begin, 6u);
  auto bad = Regex::compile("(unclosed", "pre_tokenizer.pattern");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("pre_tokenizer.pattern"), std::string::npos);
}

std::string normalize(const json& config, std::string_view text) {
  auto n = make_normalizer(config, "normalizer");
  EXPECT_TRUE(n.ok()) << n.status().to_string();
  if (!n.ok()) return "<error>";
  auto out = (*n)->normalize(text);
  EXPECT_TRUE(out.ok());
  return out.ok() ? *out : "<error>";
}

TEST(NormalizerTest, AppliesUnicodeForms) {
  EXPECT_EQ(normalize({{"type", "NFC"}}, "e\u0301 \u212b \u1100\u1161"), "\u00e9 \u00c5 \uac00");
  EXPECT_EQ(normalize({{"type", "NFD"}}, "\u00e9"), "e\u0301");
  EXPECT_EQ(normalize({{"type", "NFKC"}}, "\ufb01 \u00bd \uff21"), "fi 1\u20442 A");
  EXPECT_EQ(normalize({{"type", "NFKD"}}, "\u00c5"), "A\u030a");
}

TEST(NormalizerTest, AppliesTextTransforms) {
  EXPECT_EQ(normalize({{"type", "Lowercase"}}, "ÀB\u0130Σ"), "àbi\u0307σ");
  EXPECT_EQ(normalize({{"type", "Prepend"}, {"prepend", "\u2581"}}, "a"), "\u2581a");
  EXPECT_EQ(normalize({{"type", "Prepend"}, {"prepend", "\u2581"}}, ""), "");
  EXPECT_EQ(
      normalize({{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}, " \u3000 a \t"),
      "a \t");
  EXPECT_EQ(normalize({{"type", "Replace"}, {"pattern", {{"Regex", "\\d+"}}}, {"content", "#"}},
                      "a1b22c"),
            "a#b#c");
  EXPECT_EQ(
      normalize({{"type", "Sequence"},
                 {"normalizers",
                  json::array(
                      {{{"type", "Prepend"}, {"prepend", "_"}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "_"}}})}},
                "a b"),
      "_a_b");
}

Strings pre_tokenize(const json& config, std::string_view text, bool at_start = true) {
  auto p = make_pre_tokenizer(config, "pre_tokenizer");
  EXPECT_TRUE(p.ok()) << p.status().to_string();
  if (!p.ok()) return {};
  Strings out;
  EXPECT_TRUE((*p)->pre_tokenize({std::string(text), at_start},
                                 [&out](Piece&& word) {
                                   out.push_back(std::move(word.text));
                                   return ok_status();
                                 })
                  .ok());
  return out;
}

json split(const std::string& behavior, bool invert = false) {
  return {{"type", "Split"},
          {"pattern", {{"String", "-"}}},
          {"behavior", behavior},
          {"invert", invert}};
}

// The example of Hugging Face's SplitDelimiterBehavior documentation.
TEST(PreTokenizerTest, SplitsWithEveryBehavior) {
  const std::string text = "the-final--countdown";
  EXPECT_EQ(pre_tokenize(split("Removed"), text), (Strings{"the", "final", "countdown"}));
  EXPECT_EQ(pre_tokenize(split("Isolated"), text),
            (Strings{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(pre_tokenize(split("MergedWithPrevious"), text),
            (Strings{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(pre_tokenize(split("MergedWithNext"), text),
            (Strings{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(pre_tokenize(split("Contiguous"), text),
            (Strings{"the", "-", "final", "--", "countdown"}));
  // Inverted, the matches are what is kept.
  EXPECT_EQ(pre_tokenize(split("Removed", true), text), (Strings{"-", "-", "-"}));
}

TEST(PreTokenizerTest, SplitsDigits) {
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", false}}, "Call 123 now"),
            (Strings{"Call ", "123", " now"}));
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", true}}, "a12٣"),
            (Strings{"a", "1", "2", "٣"}));
}

TEST(PreTokenizerTest, ReplacesSpacesWithMetaspace) {
  const json always = {{"type", "Metaspace"},
                       {"replacement", "\u2581"},
                       {"prepend_scheme", "always"},
                       {"split", true}};
  EXPECT_EQ(pre_tokenize(always, "Hey friend!"), (Strings{"\u2581Hey", "\u2581friend!"}));
  EXPECT_EQ(pre_tokenize(always, "Hey   friend!"),
            (Strings{"\u2581Hey", "\u2581", "\u2581", "\u2581friend!"}));
  json first = always;
  first["prepend_scheme"] = "first";
  first["split"] = false;
  EXPECT_EQ(pre_tokenize(first, "a b", true), (Strings{"\u2581a\u2581b"}));
  EXPECT_EQ(pre_tokenize(first, "a b", false), (Strings{"a\u2581b"}));
}

TEST(PreTokenizerTest, MapsBytesAndSplitsLikeGpt2) {
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(pre_tokenize(byte_level, "Hello my friend, how's it?"),
            (Strings{"\u0120Hello", "\u0120my", "\u0120friend", ",", "\u0120how", "'s", "\u0120it",
                     "?"}));
  const json sequence = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Split"},
                     {"pattern", {{"Regex", "\\p{N}{1,3}"}}},
                     {"behavior", "Isolated"},
                     {"invert", false}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  EXPECT_EQ(pre_tokenize(sequence, "x 12345"), (Strings{"x\u0120", "123", "45"}));
}

std::string decode(const json& config, Strings tokens, bool at_start = true, bool at_end = true) {
  auto d = Decoder::from_json(config, "decoder");
  EXPECT_TRUE(d.ok()) << d.status().to_string();
  if (!d.ok()) return "<error>";
  auto out = (*d)->decode(std::move(tokens), at_start, at_end);
  return out.ok() ? *out : "<error>";
}

TEST(DecoderTest, DecodesEachStep) {
  EXPECT_EQ(decode({{"type", "ByteLevel"}}, {"\u0120Hello", "\u0120w\u00c3\u00a9"}), " Hello wé");
  EXPECT_EQ(decode(nullptr, {"a", "b"}), "a b");
  EXPECT_EQ(decode(nullptr, {"a", "b"}, false), " a b");
  const json metaspace = {
      {"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}};
  EXPECT_EQ(decode(metaspace, {"\u2581Hey", "\u2581friend!"}), "Hey friend!");
  EXPECT_EQ(decode(metaspace, {"\u2581Hey", "\u2581friend!"}, false), " Hey friend!");
  const json strip = {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 2}};
  EXPECT_EQ(decode(strip, {"  a   "}), " a ");
  const json fused_strip = {
      {"type", "Sequence"},
      {"decoders",
       json::array({{{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}}})}};
  EXPECT_EQ(decode(fused_strip, {" a", "b "}), "ab");
  EXPECT_EQ(decode(fused_strip, {" a", "b "}, false, false), " ab ");
  EXPECT_EQ(decode({{"type", "ByteFallback"}}, {"<0xE4>", "<0xB8>", "<0x80>", "x", "<0xFF>"}),
            "\u4e00x\ufffd");
}

}  // namespace
}  // namespace loraserve::tokenizer
