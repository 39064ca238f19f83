#include "fuzz/fuzz_util.h"

#include <cstring>

namespace loraserve::fuzz {

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (b < 0x80) {
      ++i;
      continue;
    } else if ((b & 0xE0) == 0xC0) {
      n = 2;
      cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      n = 3;
      cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      n = 4;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    const uint32_t min = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

void check_status(const Status& status) {
  if (status.ok()) return;
  const std::string& m = status.message();
  if (m.size() > kMaxMessageBytes) fail("an error message is longer than 2 KiB", m);
  if (!is_valid_utf8(m)) fail("an error message is not valid UTF-8", m);
  for (char c : m) {
    if (static_cast<uint8_t>(c) < 0x20 || c == 0x7F)
      fail("an error message holds a control character", m);
  }
}

const std::vector<std::unique_ptr<tokenizer::Tokenizer>>& fuzz_tokenizers() {
  static const auto* tokenizers = [] {
    auto* out = new std::vector<std::unique_ptr<tokenizer::Tokenizer>>();
    std::vector<std::string> paths = {std::string(LORASERVE_SOURCE_DIR) +
                                      "/models/demo/tokenizer.json"};
    if (const char* extra = std::getenv("LORASERVE_FUZZ_TOKENIZERS")) {
      std::string list = extra;
      size_t start = 0;
      while (start <= list.size()) {
        const size_t colon = std::min(list.find(':', start), list.size());
        if (colon > start) paths.push_back(list.substr(start, colon - start));
        start = colon + 1;
      }
    }
    for (const std::string& p : paths) {
      auto tok = tokenizer::Tokenizer::from_file(p);
      if (!tok.ok()) fail("cannot load a fuzzing tokenizer", tok.status().to_string());
      out->push_back(std::move(tok).value());
    }
    return out;
  }();
  return *tokenizers;
}

}  // namespace loraserve::fuzz
