// Fuzzes Tokenizer::encode on arbitrary bytes with real tokenizers (the demo model's, and those
// named in $LORASERVE_FUZZ_TOKENIZERS): invalid UTF-8 is a clean INVALID_ARGUMENT; valid text
// gives ids inside the vocabulary, and the demo's byte-level BPE decodes them back to the text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_util.h"

using namespace loraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto& tokenizers = fuzz::fuzz_tokenizers();
  for (size_t k = 0; k < tokenizers.size(); ++k) {
    const tokenizer::Tokenizer& t = *tokenizers[k];
    for (bool special : {false, true}) {
      auto ids = t.encode(text, special);
      if (!ids.ok()) {
        fuzz::check_status(ids.status());
        if (fuzz::is_valid_utf8(text) && ids.status().code() == StatusCode::kInvalidArgument)
          fuzz::fail("valid UTF-8 refused", ids.status().to_string());
        continue;
      }
      for (int32_t id : *ids) {
        if (id < 0 || id >= t.vocab_size()) fuzz::fail("an id outside the vocabulary");
      }
      auto back = t.decode(*ids, /*skip_special_tokens=*/false);
      if (!back.ok()) fuzz::fail("decoding encoded ids failed", back.status().to_string());
      // The demo tokenizer is byte-level BPE with no normalizer: encoding loses nothing.
      if (k == 0 && !special && *back != text) fuzz::fail("demo tokenizer: decode(encode(x)) != x");
    }
  }
  return 0;
}
