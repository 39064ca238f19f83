// Tokenizer end to end on small tokenizer.json documents whose ids are worked out by hand: the
// demo model's byte-level shape, the Llama-2 SentencePiece shape, added tokens and their rules,
// vocabulary queries, and concurrent use.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <thread>

#include "tests/tokenizer/test_tokenizers.h"

namespace loraserve::tokenizer {
namespace {

using testing::byte_level_tokenizer;
using testing::json;
using testing::sentencepiece_tokenizer;
using Ids = std::vector<int32_t>;

std::unique_ptr<Tokenizer> load(const json& j) {
  auto tok = Tokenizer::from_json(j.dump(), "<test>");
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

Ids encode(const Tokenizer& tok, std::string_view text, bool special = true) {
  auto ids = tok.encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status().to_string();
  return ids.ok() ? *ids : Ids{};
}

std::string decode(const Tokenizer& tok, const Ids& ids, bool skip = true) {
  auto text = tok.decode(ids, skip);
  EXPECT_TRUE(text.ok()) << text.status().to_string();
  return text.ok() ? *text : "<error>";
}

// he=256 ll=257 hell=258 hello=259 Ġw=260, <|bos|>=261; single bytes keep their byte value.
json demo_json() {
  return byte_level_tokenizer(
      {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"\u0120", "w"}});
}

TEST(ByteLevelTokenizerTest, EncodesWithMergesAndBos) {
  auto tok = load(demo_json());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(encode(*tok, "hello world"), (Ids{261, 259, 260, 'o', 'r', 'l', 'd'}));
  EXPECT_EQ(encode(*tok, "hello world", false), (Ids{259, 260, 'o', 'r', 'l', 'd'}));
  EXPECT_EQ(encode(*tok, "hell"), (Ids{261, 258}));
  // Equal ranks merge leftmost first.
  EXPECT_EQ(encode(*tok, "lll", false), (Ids{257, 'l'}));
  // The GPT-2 split keeps " w" together, so "Ġw" merges; a tab is its own piece.
  EXPECT_EQ(encode(*tok, "\twow", false), (Ids{'\t', 'w', 'o', 'w'}));
  EXPECT_EQ(encode(*tok, ""), (Ids{261}));
  EXPECT_EQ(encode(*tok, "", false), Ids{});
  // Multi-byte characters become their bytes.
  EXPECT_EQ(encode(*tok, "é", false), (Ids{0xC3, 0xA9}));
}

TEST(ByteLevelTokenizerTest, DecodesAndRoundTrips) {
  auto tok = load(demo_json());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(decode(*tok, {261, 259, 260, 'o', 'r', 'l', 'd'}), "hello world");
  EXPECT_EQ(decode(*tok, {261, 259}, false), "<|bos|>hello");
  for (std::string text :
       {"hello world", "  two  spaces\n\ttab", "emoji 👨‍👩‍👧 and 中文", "x"}) {
    EXPECT_EQ(decode(*tok, encode(*tok, text)), text);
  }
  // A lone continuation byte decodes to U+FFFD.
  EXPECT_EQ(decode(*tok, {'a', 0xA9, 'b'}),
            "a\xEF\xBF\xBD"
            "b");
}

TEST(ByteLevelTokenizerTest, LoadsWithoutMerges) {
  auto tok = load(byte_level_tokenizer({}));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(encode(*tok, "hi!"), (Ids{256, 'h', 'i', '!'}));
  EXPECT_EQ(decode(*tok, encode(*tok, "hi! ✓")), "hi! ✓");
}

TEST(ByteLevelTokenizerTest, AnswersVocabularyQueries) {
  auto tok = load(demo_json());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 262);
  EXPECT_EQ(tok->token_to_id("hello"), 259);
  EXPECT_EQ(tok->token_to_id("<|bos|>"), 261);
  EXPECT_EQ(tok->token_to_id("nope"), std::nullopt);
  EXPECT_EQ(tok->id_to_token(260), "\u0120w");
  EXPECT_EQ(tok->id_to_token(262), std::nullopt);
  EXPECT_TRUE(tok->is_special(261));
  EXPECT_FALSE(tok->is_special(259));
}

// ▁=259 H=260 e=261 l=262 o=263 w=264 r=265 d=266 ▁H=267 ▁He=268 ll=269 ▁Hell=270 ▁Hello=271
// ▁w=272 or=273 ▁wor=274 ▁worl=275 ▁world=276.
json llama_json() {
  return sentencepiece_tokenizer(
      {"\u2581", "H", "e", "l", "o", "w", "r", "d", "\u2581H", "\u2581He", "ll", "\u2581Hell",
       "\u2581Hello", "\u2581w", "or", "\u2581wor", "\u2581worl", "\u2581world"},
      {"\u2581 H", "\u2581H e", "l l", "\u2581He ll", "\u2581Hell o", "\u2581 w", "o r",
       "\u2581w or", "\u2581wor l", "\u2581worl d"});
}

TEST(SentencePieceTokenizerTest, PrependsMetaspaceAndMergesByRank) {
  auto tok = load(llama_json());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(encode(*tok, "Hello world"), (Ids{1, 271, 276}));
  EXPECT_EQ(encode(*tok, "Hello world", false), (Ids{271, 276}));
  EXPECT_EQ(decode(*tok, {1, 271, 276}), "Hello world");
  EXPECT_EQ(decode(*tok, {1, 271, 276}, false), "<s> Hello world");
}

TEST(SentencePieceTokenizerTest, FallsBackToBytes) {
  auto tok = load(llama_json());
  ASSERT_NE(tok, nullptr);
  // é is not a piece: its UTF-8 bytes C3 A9 are <0xC3>=3+0xC3 and <0xA9>=3+0xA9.
  EXPECT_EQ(encode(*tok, "Hé", false), (Ids{267, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(decode(*tok, {267, 3 + 0xC3, 3 + 0xA9}), "Hé");
  // An ill-formed byte run becomes one U+FFFD per byte, as Hugging Face's ByteFallback.
  EXPECT_EQ(decode(*tok, {267, 3 + 0xE4, 3 + 0xB8, 271}), "H\xEF\xBF\xBD\xEF\xBF\xBD Hello");
}

// token_bytes: what OpenAI's logprobs `bytes` show for one token.
TEST(TokenBytesTest, AreTheTokensOwnBytes) {
  auto bytes = [](const Tokenizer& tok, int32_t id) {
    auto b = tok.token_bytes(id);
    EXPECT_TRUE(b.ok()) << b.status().to_string();
    return b.ok() ? *b : "<error>";
  };
  auto level = load(demo_json());
  ASSERT_NE(level, nullptr);
  EXPECT_EQ(bytes(*level, 259), "hello");
  EXPECT_EQ(bytes(*level, 260), " w");  // Ġ is the space byte
  // Half of é (C3 A9) is that byte, not U+FFFD.
  EXPECT_EQ(bytes(*level, 0xC3), "\xC3");
  EXPECT_EQ(bytes(*level, 0xA9), "\xA9");
  EXPECT_EQ(bytes(*level, 261), "<|bos|>");  // special tokens show their text
  EXPECT_EQ(bytes(*level, 5000), "");        // an id past the vocabulary has none
  EXPECT_FALSE(level->token_bytes(-1).ok());

  auto piece = load(llama_json());
  ASSERT_NE(piece, nullptr);
  // ▁ is a space, kept as inside a text (decoding "▁Hello" alone strips it).
  EXPECT_EQ(bytes(*piece, 271), " Hello");
  EXPECT_EQ(decode(*piece, {271}), "Hello");
  EXPECT_EQ(bytes(*piece, 3 + 0xE4), "\xE4");
  EXPECT_EQ(bytes(*piece, 1), "<s>");
}

TEST(SentencePieceTokenizerTest, FusesUnknownCharactersWithoutByteFallback) {
  json j = llama_json();
  j["model"]["byte_fallback"] = false;
  auto fused = load(j);
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(encode(*fused, "Hé€", false), (Ids{267, 0}));
  j["model"]["fuse_unk"] = false;
  auto separate = load(j);
  ASSERT_NE(separate, nullptr);
  EXPECT_EQ(encode(*separate, "Hé€", false), (Ids{267, 0, 0}));
}

TEST(SentencePieceTokenizerTest, MatchesSpecialTokensBeforeNormalizing) {
  auto tok = load(llama_json());
  ASSERT_NE(tok, nullptr);
  // Each piece between added tokens is normalized on its own (so each gets its ▁).
  EXPECT_EQ(encode(*tok, "Hello<s>world"), (Ids{1, 271, 1, 276}));
  EXPECT_EQ(decode(*tok, {1, 271, 1, 276}), "Hello world");
  EXPECT_EQ(decode(*tok, {1, 271, 1, 276}, false), "<s> Hello<s> world");
}

TEST(AddedTokenTest, HonoursLstripRstripAndSingleWord) {
  json j = demo_json();
  json strip = testing::added_token("<mask>", 300, true);
  strip["lstrip"] = true;
  strip["rstrip"] = true;
  json single = testing::added_token("<w>", 301, false);
  single["single_word"] = true;
  single["normalized"] = false;
  j["added_tokens"].push_back(strip);
  j["added_tokens"].push_back(single);
  auto tok = load(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 302);
  // The spaces around <mask> belong to it.
  EXPECT_EQ(encode(*tok, "a <mask>  b", false), (Ids{'a', 300, 'b'}));
  // <w> right after a letter is not a single word: it stays text; after a space it matches.
  EXPECT_EQ(encode(*tok, "x<w> <w>", false), (Ids{'x', '<', 'w', '>', ' ', 301}));
}

TEST(AddedTokenTest, MatchesNormalizedTokensInNormalizedText) {
  json j = demo_json();
  j["normalizer"] = {{"type", "Lowercase"}};
  j["added_tokens"].push_back(testing::added_token("yes", 300, false));
  j["added_tokens"].push_back(testing::added_token("<RAW>", 301, true));
  auto tok = load(j);
  ASSERT_NE(tok, nullptr);
  // "YES" lowercases to the normalized token "yes"; "<RAW>" is matched before normalizing.
  EXPECT_EQ(encode(*tok, "YES<RAW>", false), (Ids{300, 301}));
  // Non-special added tokens survive skip_special_tokens; special ones do not.
  EXPECT_EQ(decode(*tok, {300, 301}), "yes");
  EXPECT_EQ(decode(*tok, {300, 301}, false), "yes<RAW>");
}

TEST(TokenizerTest, IsSafeToShareAcrossThreads) {
  auto tok = load(demo_json());
  ASSERT_NE(tok, nullptr);
  std::vector<std::string> texts;
  for (int i = 0; i < 300; ++i) {
    texts.push_back("hello world " + std::to_string(i * 7919) + " hell" + std::string(i % 13, 'l'));
  }
  std::vector<Ids> expected;
  for (const std::string& t : texts) expected.push_back(encode(*tok, t));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          auto ids = tok->encode(texts[(i + t * 37) % texts.size()]);
          if (!ids.ok() || *ids != expected[(i + t * 37) % texts.size()]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(TokenizerTest, MergesVeryLongWordsInSubquadraticTime) {
  // One 400 000-character word: the heap-based merge loop takes milliseconds, a quadratic one
  // would take hours (and the test's ctest timeout stops it).
  json j = byte_level_tokenizer({{"a", "a"}, {"aa", "aa"}, {"aaaa", "aaaa"}});
  auto tok = load(j);
  ASSERT_NE(tok, nullptr);
  const Ids ids = encode(*tok, std::string(400001, 'a'), false);
  ASSERT_EQ(ids.size(), 50001u);  // 50 000 × "aaaaaaaa" (id 258) and one "a"
  EXPECT_EQ(ids.front(), 258);
  EXPECT_EQ(ids.back(), 'a');
}

}  // namespace
}  // namespace loraserve::tokenizer
