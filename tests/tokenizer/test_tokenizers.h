// Small tokenizer.json documents for the tokenizer unit tests, built in code so every expected id
// can be worked out by hand.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/utf8.h"

namespace loraserve::tokenizer::testing {

using nlohmann::json;

inline json added_token(const std::string& content, int id, bool special = true) {
  return {{"id", id},        {"content", content},     {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", !special}, {"special", special}};
}

// GPT-2 style, as the demo model ships: byte-level alphabet (ids 0-255 in byte order), the given
// merges appended in order, "<|bos|>" (special) after them, ByteLevel pre-tokenizer with the GPT-2
// regex, TemplateProcessing adding the BOS, ByteLevel decoder.
inline json byte_level_tokenizer(const std::vector<std::pair<std::string, std::string>>& merges) {
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[std::string(alphabet.encode(static_cast<uint8_t>(b)))] = b;
  json merge_list = json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    merge_list.push_back(json::array({a, b}));
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
  }
  const int bos = next;
  return {
      {"version", "1.0"},
      {"added_tokens", json::array({added_token("<|bos|>", bos)})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens",
         {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {bos}}, {"tokens", {"<|bos|>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}, {"unk_token", nullptr}}},
  };
}

// Llama-2 style: <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF> = 3..258, then `pieces` in order; merges as
// "a b" strings; Prepend/Replace normalizers, byte_fallback, fuse_unk, BOS template, and the
// Replace/ByteFallback/Fuse/Strip decoder.
inline json sentencepiece_tokenizer(const std::vector<std::string>& pieces,
                                    const std::vector<std::string>& merges) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int next = 259;
  for (const std::string& p : pieces) vocab[p] = next++;
  return {
      {"added_tokens",
       json::array({added_token("<unk>", 0), added_token("<s>", 1), added_token("</s>", 2)})},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         json::array(
             {{{"type", "Prepend"}, {"prepend", "\u2581"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                      {{"type", "ByteFallback"}},
                      {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", merges},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true}}},
  };
}

}  // namespace loraserve::tokenizer::testing
