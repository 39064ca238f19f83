#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Length of the well-formed sequence starting at s[i], or 0 when the bytes there are ill-formed.
// Sets *maximal_subpart to how many bytes one U+FFFD replaces when ill-formed (at least 1).
size_t well_formed_length(std::string_view s, size_t i, size_t* maximal_subpart) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  *maximal_subpart = 1;
  if (b0 < 0x80) return 1;
  size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Unicode table 3-7)
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size()) return 0;
    const auto b = static_cast<unsigned char>(s[i + k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : is_continuation(b);
    if (!ok) return 0;
    *maximal_subpart = k + 1;
  }
  return need + 1;
}

}  // namespace

std::optional<size_t> find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t subpart = 0;
    const size_t n = well_formed_length(s, i, &subpart);
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

char32_t next_code_point(std::string_view s, size_t* pos) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + *pos;
  const size_t n = utf8_length(p[0]);
  *pos += n;
  switch (n) {
    case 1:
      return p[0];
    case 2:
      return ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu);
    case 3:
      return ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    default:
      return ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) |
             (p[3] & 0x3Fu);
  }
}

void append_utf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string decode_utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    size_t subpart = 0;
    const size_t n = well_formed_length(bytes, i, &subpart);
    if (n == 0) {
      out.append(kReplacementUtf8);
      i += subpart;
    } else {
      out.append(bytes.substr(i, n));
      i += n;
    }
  }
  return out;
}

bool is_unicode_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

const ByteLevelAlphabet& ByteLevelAlphabet::get() {
  static const ByteLevelAlphabet kAlphabet;
  return kAlphabet;
}

ByteLevelAlphabet::ByteLevelAlphabet() {
  byte_of_.fill(-1);
  // Printable bytes stand for themselves; the others take code points 256, 257, ... in order.
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = printable(b) ? static_cast<char32_t>(b) : next++;
    std::string utf8;
    append_utf8(cp, &utf8);
    length_[b] = static_cast<uint8_t>(utf8.size());
    utf8_[b] = {utf8[0], utf8.size() > 1 ? utf8[1] : '\0'};
    byte_of_[cp] = static_cast<int16_t>(b);
  }
}

void ByteLevelAlphabet::encode(std::string_view text, std::string* out) const {
  const size_t start = out->size();
  out->resize(start + 2 * text.size());
  char* p = out->data() + start;
  for (char c : text) {
    const auto b = static_cast<uint8_t>(c);
    p[0] = utf8_[b][0];
    p[1] = utf8_[b][1];
    p += length_[b];
  }
  out->resize(static_cast<size_t>(p - out->data()));
}

std::optional<uint8_t> ByteLevelAlphabet::decode(char32_t cp) const {
  if (cp >= byte_of_.size() || byte_of_[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(byte_of_[cp]);
}

}  // namespace loraserve::tokenizer
