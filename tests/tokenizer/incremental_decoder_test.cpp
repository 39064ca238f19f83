// IncrementalDecoder: pieces are whole UTF-8 characters, held back while more tokens can still
// change them, and always concatenate to the full decode (hand-checked cases, then random id
// sequences on both tokenizer shapes and on decoders with end-of-text rules).
#include "tokenizer/incremental_decoder.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/tokenizer/test_tokenizers.h"

namespace loraserve::tokenizer {
namespace {

using testing::byte_level_tokenizer;
using testing::json;
using testing::sentencepiece_tokenizer;
using Strings = std::vector<std::string>;

std::unique_ptr<Tokenizer> load(const json& j) {
  auto tok = Tokenizer::from_json(j.dump(), "<test>");
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

// The pieces add() returns for each id, then flush()'s.
Strings pieces(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip = true) {
  IncrementalDecoder decoder(tok, skip);
  Strings out;
  for (int32_t id : ids) {
    auto piece = decoder.add(id);
    EXPECT_TRUE(piece.ok()) << piece.status().to_string();
    out.push_back(piece.ok() ? *piece : "<error>");
  }
  auto rest = decoder.flush();
  EXPECT_TRUE(rest.ok());
  out.push_back(rest.ok() ? *rest : "<error>");
  return out;
}

std::string concat(const Strings& s) {
  std::string out;
  for (const auto& p : s) out += p;
  return out;
}

json llama_json() {
  // ▁=259 H=260 e=261 l=262 o=263 ▁H=264 ▁He=265 ll=266 ▁Hell=267 ▁Hello=268.
  return sentencepiece_tokenizer(
      {"\u2581", "H", "e", "l", "o", "\u2581H", "\u2581He", "ll", "\u2581Hell", "\u2581Hello"},
      {"\u2581 H", "\u2581H e", "l l", "\u2581He ll", "\u2581Hell o"});
}
constexpr int32_t kSpace = 259, kH = 264, kHello = 268;
int32_t byte_id(uint8_t b) { return 3 + b; }

TEST(IncrementalDecoderTest, HoldsSplitCharactersOfByteLevelTokens) {
  auto tok = load(byte_level_tokenizer({}));
  ASSERT_NE(tok, nullptr);
  // 😀 is F0 9F 98 80: nothing until its last byte.
  EXPECT_EQ(pieces(*tok, {'a', 0xF0, 0x9F, 0x98, 0x80, 'b'}),
            (Strings{"a", "", "", "", "😀", "b", ""}));
  // A broken character is released once a byte shows it cannot complete.
  EXPECT_EQ(pieces(*tok, {0xE4, 0xB8, 'x'}), (Strings{"", "", "\ufffdx", ""}));
  // At the end, flush() gives what is left.
  EXPECT_EQ(pieces(*tok, {'a', 0xE4}), (Strings{"a", "", "\ufffd"}));
}

TEST(IncrementalDecoderTest, HoldsByteFallbackRunsUntilTheyEnd) {
  auto tok = load(llama_json());
  ASSERT_NE(tok, nullptr);
  // Hé Hello: ▁H, <0xC3> <0xA9>, ▁Hello; the leading space of the sequence is stripped.
  EXPECT_EQ(pieces(*tok, {kH, byte_id(0xC3), byte_id(0xA9), kHello}),
            (Strings{"H", "", "", "é Hello", ""}));
  // "A" as a byte token followed by a byte that breaks the run: Hugging Face's ByteFallback turns
  // the whole run into U+FFFDs, so "A" must not have been streamed.
  const std::vector<int32_t> ids = {kHello, byte_id('A'), byte_id(0xE4), kHello};
  EXPECT_EQ(concat(pieces(*tok, ids)), *tok->decode(ids));
  EXPECT_EQ(*tok->decode(ids), "Hello\ufffd\ufffd Hello");
}

TEST(IncrementalDecoderTest, AppliesStartOfTextRulesOnce) {
  auto tok = load(llama_json());
  ASSERT_NE(tok, nullptr);
  // "▁" then "▁Hello": Strip removes one leading space of the whole text, not of each token.
  EXPECT_EQ(pieces(*tok, {kSpace, kHello, kSpace, kHello}),
            (Strings{"", " Hello", " ", " Hello", ""}));
  EXPECT_EQ(*tok->decode({{kSpace, kHello, kSpace, kHello}}), " Hello  Hello");
  // The special <s> is skipped, or streamed as text.
  EXPECT_EQ(pieces(*tok, {1, kHello}), (Strings{"", "Hello", ""}));
  EXPECT_EQ(pieces(*tok, {1, kHello}, false), (Strings{"<s>", " Hello", ""}));
}

TEST(IncrementalDecoderTest, HoldsCharactersAnEndRuleMayStrip) {
  json j = byte_level_tokenizer({});
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       json::array({{{"type", "ByteLevel"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 0}, {"stop", 1}}})}};
  auto tok = load(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(pieces(*tok, {'a', ' ', 'b', ' '}), (Strings{"a", "", " b", "", ""}));
  EXPECT_EQ(*tok->decode({{'a', ' ', 'b', ' '}}), "a b");
}

TEST(IncrementalDecoderTest, WaitsForFlushWhenEarlierTextCanChange) {
  json j = byte_level_tokenizer({});
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       json::array({{{"type", "ByteLevel"}},
                    {{"type", "Replace"}, {"pattern", {{"String", "ab"}}}, {"content", "X"}}})}};
  auto tok = load(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(pieces(*tok, {'a', 'b', 'c'}), (Strings{"", "", "", "Xc"}));
}

TEST(IncrementalDecoderTest, StartsOverAfterFlush) {
  auto tok = load(llama_json());
  ASSERT_NE(tok, nullptr);
  IncrementalDecoder decoder(*tok);
  EXPECT_EQ(*decoder.add(kHello), "Hello");
  EXPECT_EQ(*decoder.flush(), "");
  EXPECT_EQ(*decoder.add(kHello), "Hello");  // a new sequence: its leading space is stripped again
}

// Random ids, many of them bytes, on every decoder shape: pieces are valid UTF-8 and concatenate
// to the full decode.
TEST(IncrementalDecoderTest, ConcatenatesToTheFullDecodeOnRandomSequences) {
  json strip_end = byte_level_tokenizer({{"a", "b"}});
  strip_end["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       json::array({{{"type", "ByteLevel"}},
                    {{"type", "Strip"}, {"content", "a"}, {"start", 2}, {"stop", 2}}})}};
  json no_decoder = llama_json();
  no_decoder["decoder"] = nullptr;
  const std::vector<json> shapes = {byte_level_tokenizer({{"a", "b"}}), llama_json(), strip_end,
                                    no_decoder};
  std::mt19937 rng(11);
  for (size_t s = 0; s < shapes.size(); ++s) {
    auto tok = load(shapes[s]);
    ASSERT_NE(tok, nullptr);
    const std::vector<int32_t> common =
        s == 0 || s == 2
            ? std::vector<int32_t>{'a', ' ', 0xC3, 0xA9, 0xE4, 0xB8, 0x80, 0xF0, 0x9F, 256, 257}
            : std::vector<int32_t>{0,
                                   1,
                                   2,
                                   kSpace,
                                   kH,
                                   kHello,
                                   byte_id('A'),
                                   byte_id(0xC3),
                                   byte_id(0xA9),
                                   byte_id(0xE4),
                                   byte_id(0xB8),
                                   byte_id(0x80)};
    for (int n = 0; n < 400; ++n) {
      std::vector<int32_t> ids;
      const size_t length = rng() % 12;
      for (size_t k = 0; k < length; ++k) {
        ids.push_back(rng() % 4 == 0 ? static_cast<int32_t>(rng() % tok->vocab_size())
                                     : common[rng() % common.size()]);
      }
      for (bool skip : {true, false}) {
        const Strings got = pieces(*tok, ids, skip);
        for (const std::string& p : got) {
          ASSERT_FALSE(find_invalid_utf8(p).has_value()) << "shape " << s;
        }
        ASSERT_EQ(concat(got), *tok->decode(ids, skip))
            << "shape " << s << " ids " << json(ids).dump() << " skip " << skip;
      }
    }
  }
}

}  // namespace
}  // namespace loraserve::tokenizer
