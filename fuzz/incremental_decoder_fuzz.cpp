// Fuzzes IncrementalDecoder on arbitrary id streams (4 input bytes per id, mostly inside the
// vocabulary, some not): a negative id is a clean error that leaves the decoder as it was, an
// id with no token gives no text; the pieces are valid UTF-8 and concatenate to
// Tokenizer::decode of the accepted ids.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "tokenizer/incremental_decoder.h"

using namespace loraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto& tokenizers = fuzz::fuzz_tokenizers();
  const tokenizer::Tokenizer& t = *tokenizers[data[0] % tokenizers.size()];
  const bool skip_special = (data[0] & 0x80) != 0;
  std::vector<int32_t> ids;
  for (size_t i = 1; i + 4 <= size; i += 4) {
    uint32_t raw = 0;
    std::memcpy(&raw, data + i, 4);
    // Mostly valid ids; the top bits pick a few invalid ones (negative, past the vocabulary).
    int32_t id = static_cast<int32_t>(raw % static_cast<uint32_t>(t.vocab_size()));
    if ((raw >> 28) == 0xF) id = static_cast<int32_t>(raw);
    if ((raw >> 28) == 0xE) id = t.vocab_size() + static_cast<int32_t>(raw & 0xFF);
    ids.push_back(id);
  }
  tokenizer::IncrementalDecoder inc(t, skip_special);
  std::string streamed;
  std::vector<int32_t> accepted;
  for (int32_t id : ids) {
    auto piece = inc.add(id);
    if (!piece.ok()) {
      fuzz::check_status(piece.status());
      continue;
    }
    if (!fuzz::is_valid_utf8(*piece)) fuzz::fail("a streamed piece is not valid UTF-8", *piece);
    streamed += *piece;
    accepted.push_back(id);
  }
  auto rest = inc.flush();
  if (!rest.ok()) fuzz::fail("flush failed", rest.status().to_string());
  streamed += *rest;
  auto whole = t.decode(accepted, skip_special);
  if (!whole.ok()) fuzz::fail("decode of accepted ids failed", whole.status().to_string());
  if (streamed != *whole)
    fuzz::fail("streamed text differs from decode", streamed + "\n---\n" + *whole);
  return 0;
}
