// Every corpus string of tools/tokenizer-reference, for every reference tokenizer: the ids must
// equal @lenml/tokenizers' ids (with and without special tokens), decode must equal its decode,
// decode(encode(x)) == x wherever the reference's round trip holds, and the incremental
// decoder's pieces must concatenate to the full decode. The ctest fixture tokenizer_reference
// (tools/tokenizer-reference/prepare.sh) writes the reference files.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/incremental_decoder.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

using nlohmann::json;

constexpr size_t kMinCorpus = 500;
constexpr int kShownMismatches = 5;

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path
                         << " (run the tokenizer_reference_setup test: ctest -R tokenizer)";
  return json::parse(in, nullptr, false);
}

struct Case {
  std::string text;
  std::vector<int32_t> ids, ids_no_special;
  std::string decoded, decoded_with_special;
};

std::vector<Case> read_cases(const std::string& path) {
  std::vector<Case> cases;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line);
    cases.push_back(
        {j["text"], j["ids"], j["ids_no_special"], j["decoded"], j["decoded_with_special"]});
  }
  return cases;
}

std::string shown(const std::string& s) {
  std::string dumped = json(s).dump(-1, ' ', false, json::error_handler_t::replace);
  return dumped.size() > 120 ? dumped.substr(0, 117) + "..." : dumped;
}

std::string stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                   bool* pieces_valid) {
  IncrementalDecoder decoder(tok, skip);
  std::string out;
  *pieces_valid = true;
  for (int32_t id : ids) {
    auto piece = decoder.add(id);
    if (!piece.ok()) return "<error: " + piece.status().to_string() + ">";
    *pieces_valid = *pieces_valid && !find_invalid_utf8(*piece).has_value();
    out += *piece;
  }
  auto rest = decoder.flush();
  if (!rest.ok()) return "<error: " + rest.status().to_string() + ">";
  return out + *rest;
}

class ReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceTest, MatchesReferenceOnCorpus) {
  const std::string dir = LORASERVE_TOKENIZER_REFERENCE_DIR;
  const json manifest = read_json(dir + "/manifest.json");
  ASSERT_TRUE(manifest.is_object()) << dir << "/manifest.json is not valid JSON";
  const json* entry = nullptr;
  for (const json& t : manifest["tokenizers"]) {
    if (t["name"] == GetParam()) entry = &t;
  }
  ASSERT_NE(entry, nullptr) << GetParam() << " is not in " << dir << "/manifest.json";
  auto tok = Tokenizer::from_file((*entry)["tokenizer_json"]);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  const std::vector<Case> cases = read_cases((*entry)["cases"]);
  ASSERT_GE(cases.size(), kMinCorpus);

  int ids_bad = 0, plain_bad = 0, decode_bad = 0, round_trips = 0, round_trip_bad = 0,
      stream_bad = 0;
  for (const Case& c : cases) {
    auto ids = (*tok)->encode(c.text, true);
    auto plain = (*tok)->encode(c.text, false);
    ASSERT_TRUE(ids.ok() && plain.ok()) << ids.status().to_string() << " for " << shown(c.text);
    if (*ids != c.ids && ++ids_bad <= kShownMismatches) {
      ADD_FAILURE() << GetParam() << " ids differ for " << shown(c.text)
                    << "\n  ours:      " << json(*ids).dump().substr(0, 300)
                    << "\n  reference: " << json(c.ids).dump().substr(0, 300);
    }
    if (*plain != c.ids_no_special && ++plain_bad <= kShownMismatches) {
      ADD_FAILURE() << GetParam() << " ids without special tokens differ for " << shown(c.text);
    }
    auto decoded = (*tok)->decode(c.ids, true);
    auto decoded_all = (*tok)->decode(c.ids, false);
    ASSERT_TRUE(decoded.ok() && decoded_all.ok()) << decoded.status().to_string();
    if ((*decoded != c.decoded || *decoded_all != c.decoded_with_special) &&
        ++decode_bad <= kShownMismatches) {
      ADD_FAILURE() << GetParam() << " decode differs for " << shown(c.text)
                    << "\n  ours:      " << shown(*decoded) << " / " << shown(*decoded_all)
                    << "\n  reference: " << shown(c.decoded) << " / "
                    << shown(c.decoded_with_special);
    }
    if (c.decoded == c.text) {
      ++round_trips;
      auto again = (*tok)->decode(*ids, true);
      if ((!again.ok() || *again != c.text) && ++round_trip_bad <= kShownMismatches) {
        ADD_FAILURE() << GetParam() << " decode(encode(x)) != x for " << shown(c.text);
      }
    }
    for (bool skip : {true, false}) {
      bool pieces_valid = false;
      const std::string streamed = stream(**tok, c.ids, skip, &pieces_valid);
      const std::string& full = skip ? *decoded : *decoded_all;
      if ((streamed != full || !pieces_valid) && ++stream_bad <= kShownMismatches) {
        ADD_FAILURE() << GetParam() << " incremental decode (skip_special_tokens=" << skip
                      << ") gives " << shown(streamed) << ", full decode " << shown(full)
                      << (pieces_valid ? "" : " (a piece was not valid UTF-8)");
      }
    }
  }
  // Streaming over id sequences that break characters apart: corpus ids with ids dropped, and
  // random ids (many ill-formed byte sequences).
  std::mt19937 rng(7);
  int random_stream_bad = 0;
  for (int n = 0; n < 200; ++n) {
    std::vector<int32_t> ids;
    if (n % 2 == 0) {
      for (int32_t id : cases[rng() % cases.size()].ids) {
        if (rng() % 5 != 0) ids.push_back(id);
      }
    } else {
      while (ids.size() < 40) {
        const auto id = static_cast<int32_t>(rng() % (*tok)->vocab_size());
        if ((*tok)->id_to_token(id)) ids.push_back(id);
      }
    }
    for (bool skip : {true, false}) {
      auto full = (*tok)->decode(ids, skip);
      ASSERT_TRUE(full.ok()) << full.status().to_string();
      bool pieces_valid = false;
      const std::string streamed = stream(**tok, ids, skip, &pieces_valid);
      if ((streamed != *full || !pieces_valid) && ++random_stream_bad <= kShownMismatches) {
        ADD_FAILURE() << GetParam() << " incremental decode of " << json(ids).dump() << " gives "
                      << shown(streamed) << ", full decode " << shown(*full);
      }
    }
  }
  std::printf(
      "%s: %zu strings; ids mismatches %d, without special tokens %d, decode %d; "
      "round trips %d (failed %d); incremental mismatches %d, on broken sequences %d\n",
      GetParam().c_str(), cases.size(), ids_bad, plain_bad, decode_bad, round_trips, round_trip_bad,
      stream_bad, random_stream_bad);
  EXPECT_EQ(ids_bad, 0);
  EXPECT_EQ(plain_bad, 0);
  EXPECT_EQ(decode_bad, 0);
  EXPECT_EQ(round_trip_bad, 0);
  EXPECT_EQ(stream_bad, 0);
  EXPECT_EQ(random_stream_bad, 0);
  EXPECT_GT(round_trips, static_cast<int>(cases.size() / 2));
}

INSTANTIATE_TEST_SUITE_P(Lenml, ReferenceTest,
                         ::testing::Values("llama3", "qwen3", "llama2", "gpt4o", "deepseek_v3",
                                           "gemma3", "demo_bytelevel", "demo_nomerges",
                                           "llama2_metaspace"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace loraserve::tokenizer
