// Bad input never crashes the tokenizer: malformed or unsupported tokenizer.json files fail to
// load with a status naming the file and the field at fault; invalid UTF-8 and unknown ids fail
// the one call with INVALID_ARGUMENT; randomly corrupted files load or fail, never crash.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "tests/tokenizer/test_tokenizers.h"
#include "tokenizer/incremental_decoder.h"
#include "tokenizer/tokenizer.h"

namespace loraserve::tokenizer {
namespace {

using testing::byte_level_tokenizer;
using testing::json;

json demo() { return byte_level_tokenizer({{"h", "e"}, {"l", "l"}}); }

// Loading `text` fails with INVALID_ARGUMENT and a message holding every one of `parts`.
void expect_load_error(const std::string& text, std::initializer_list<std::string> parts) {
  auto tok = Tokenizer::from_json(text, "bad.json");
  ASSERT_FALSE(tok.ok()) << "loaded: " << text.substr(0, 200);
  EXPECT_EQ(tok.status().code(), StatusCode::kInvalidArgument) << tok.status().to_string();
  EXPECT_NE(tok.status().message().find("bad.json"), std::string::npos) << tok.status().to_string();
  for (const std::string& part : parts) {
    EXPECT_NE(tok.status().message().find(part), std::string::npos)
        << "'" << part << "' not in: " << tok.status().to_string();
  }
}

TEST(BadTokenizerFileTest, RejectsMalformedJson) {
  expect_load_error("", {"not valid JSON"});
  expect_load_error("{\"model\": {", {"not valid JSON"});
  expect_load_error(demo().dump().substr(0, 300), {"not valid JSON"});
  expect_load_error("[1, 2]", {"top"});
  expect_load_error("{}", {"'model'"});
}

TEST(BadTokenizerFileTest, NamesUnsupportedTypes) {
  json j = demo();
  j["model"]["type"] = "Unigram";
  expect_load_error(j.dump(), {"model.type", "Unigram"});
  j = demo();
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({{{"type", "ByteLevel"}}, {{"type", "Whitespace"}}})}};
  expect_load_error(j.dump(), {"pre_tokenizer.pretokenizers[1].type", "Whitespace"});
  j = demo();
  j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
  expect_load_error(j.dump(), {"normalizer.type", "Precompiled"});
  j = demo();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_load_error(j.dump(), {"decoder.type", "WordPiece"});
  j = demo();
  j["post_processor"] = {{"type", "Magic"}};
  expect_load_error(j.dump(), {"post_processor.type", "Magic"});
  // Metaspace's prepend_scheme is checked wherever it is read: pre-tokenizer and decoder.
  j = demo();
  j["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "bogus"}};
  expect_load_error(j.dump(), {"pre_tokenizer.prepend_scheme", "bogus"});
  j = demo();
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "bogus"}};
  expect_load_error(j.dump(), {"decoder.prepend_scheme", "bogus"});
}

TEST(BadTokenizerFileTest, NamesBadFields) {
  json j = demo();
  j["model"]["vocab"]["x"] = "seven";
  expect_load_error(j.dump(), {"model.vocab[\"x\"]"});
  j = demo();
  j["model"]["merges"].push_back(json::array({"h", "\u2603"}));
  expect_load_error(j.dump(), {"model.merges[2]", "\u2603"});
  j = demo();
  j["model"]["merges"].push_back("nospace");
  expect_load_error(j.dump(), {"model.merges[2]"});
  j = demo();
  j["model"]["unk_token"] = "<unk>";
  expect_load_error(j.dump(), {"model.unk_token", "<unk>"});
  j = demo();
  j["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_load_error(j.dump(), {"pre_tokenizer.pattern", "(unclosed"});
  j["pre_tokenizer"]["pattern"] = {{"Regex", "a"}};
  j["pre_tokenizer"]["behavior"] = "Sideways";
  expect_load_error(j.dump(), {"pre_tokenizer.behavior", "Sideways"});
  j = demo();
  j["added_tokens"][0].erase("id");
  expect_load_error(j.dump(), {"added_tokens[0].id"});
  j = demo();
  j["post_processor"]["special_tokens"]["<|bos|>"]["ids"] = json::array({99999});
  expect_load_error(j.dump(), {"99999"});
  j = demo();
  j["post_processor"]["single"].push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
  expect_load_error(j.dump(), {"post_processor.single[2]"});
  j = demo();
  j["decoder"] = {{"type", "Strip"}, {"content", "ab"}, {"start", 1}, {"stop", 0}};
  expect_load_error(j.dump(), {"decoder.content"});
}

TEST(BadTokenizerFileTest, ReportsMissingFiles) {
  auto tok = Tokenizer::from_file("/nonexistent/tokenizer.json");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find("/nonexistent/tokenizer.json"), std::string::npos);
}

TEST(BadTokenizerFileTest, SurvivesRandomCorruption) {
  const std::string good = demo().dump();
  std::mt19937 rng(42);
  int loaded = 0, rejected = 0;
  for (int n = 0; n < 300; ++n) {
    std::string text = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[at] = static_cast<char>(rng() % 256);
          break;
        case 1:
          text.erase(at, 1 + rng() % 8);
          break;
        default:
          text.insert(at, 1, "{}[]\",:0-9e\\u"[rng() % 14]);
          break;
      }
    }
    auto tok = Tokenizer::from_json(text, "fuzz.json");
    if (!tok.ok()) {
      ++rejected;
      EXPECT_FALSE(tok.status().message().empty());
      continue;
    }
    ++loaded;
    // Whatever loaded must still encode and decode without crashing.
    auto ids = (*tok)->encode("hello world héllo");
    ASSERT_TRUE(ids.ok()) << ids.status().to_string();
    EXPECT_TRUE((*tok)->decode(*ids).ok());
  }
  EXPECT_GT(rejected, 0);
  std::printf("corrupted files: %d loaded, %d rejected\n", loaded, rejected);
}

TEST(BadInputTest, RejectsInvalidUtf8Text) {
  auto tok = Tokenizer::from_json(demo().dump(), "demo");
  ASSERT_TRUE(tok.ok());
  for (std::string bad : {std::string("ab\xFF"), std::string("\xC3"), std::string("x\xED\xA0\x80"),
                          std::string("ok\xC0\xAF")}) {
    auto ids = (*tok)->encode(bad);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(ids.status().message().find("UTF-8"), std::string::npos) << ids.status().to_string();
  }
  auto ids = (*tok)->encode("ab\xFF");
  EXPECT_NE(ids.status().message().find("offset 2"), std::string::npos) << ids.status().to_string();
  // The tokenizer is unharmed.
  auto ok = (*tok)->encode("fine");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->size(), 5u);
}

TEST(BadInputTest, NegativeIdsAreRefusedAndIdsWithoutATokenDecodeToNothing) {
  auto tok = Tokenizer::from_json(demo().dump(), "demo");
  ASSERT_TRUE(tok.ok());
  const int32_t vocab = (*tok)->vocab_size();
  for (int32_t bad : {-1, -(1 << 30)}) {
    const std::vector<int32_t> ids = {'a', bad};
    auto text = (*tok)->decode(ids);
    ASSERT_FALSE(text.ok());
    EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(text.status().message().find(std::to_string(bad)), std::string::npos)
        << text.status().to_string();
  }
  // Past the tokenizer's last id (a model's vocabulary padded past its tokenizer's, as Qwen2.5's
  // 151936 against 151665): nothing, as Hugging Face's decode skips such ids.
  for (int32_t none : {vocab, vocab + 7, 1 << 30}) {
    auto text = (*tok)->decode(std::vector<int32_t>{'a', none, 'b'});
    ASSERT_TRUE(text.ok()) << text.status().to_string();
    EXPECT_EQ(*text, "ab");
  }
  IncrementalDecoder stream(**tok);
  ASSERT_EQ(*stream.add('a'), "a");
  auto none = stream.add(vocab + 5);
  ASSERT_TRUE(none.ok()) << none.status().to_string();
  EXPECT_EQ(*none, "");
  EXPECT_FALSE(stream.add(-3).ok());
  EXPECT_EQ(*stream.add('b'), "b");  // the stream goes on
}

}  // namespace
}  // namespace loraserve::tokenizer
