// Fuzzes tokenizer.json loading: every stage (added tokens, normalizers, pre-tokenizers, BPE,
// post-processor, decoders). An accepted tokenizer encodes and decodes a few fixed strings and
// ids without crashing; every refusal is a short, clean message.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "tokenizer/incremental_decoder.h"
#include "tokenizer/tokenizer.h"

using namespace loraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto tok = tokenizer::Tokenizer::from_json(text, "tokenizer.json");
  if (!tok.ok()) {
    fuzz::check_status(tok.status());
    return 0;
  }
  const tokenizer::Tokenizer& t = **tok;
  for (const char* sample :
       {"Hello, world! 123", " \t\n x", "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x99\x82", ""}) {
    for (bool special : {true, false}) {
      auto ids = t.encode(sample, special);
      if (!ids.ok()) {
        fuzz::check_status(ids.status());
        continue;
      }
      auto back = t.decode(*ids, !special);
      if (!back.ok()) {
        fuzz::check_status(back.status());
        continue;
      }
      if (!fuzz::is_valid_utf8(*back)) fuzz::fail("decode gave invalid UTF-8", *back);
    }
  }
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < std::min(t.vocab_size(), 64); ++id) ids.push_back(id);
  auto all = t.decode(ids, false);
  if (!all.ok()) fuzz::check_status(all.status());
  tokenizer::IncrementalDecoder inc(t, false);
  for (int32_t id : ids) {
    auto piece = inc.add(id);
    if (!piece.ok()) fuzz::check_status(piece.status());
  }
  auto rest = inc.flush();
  if (!rest.ok()) fuzz::check_status(rest.status());
  return 0;
}
