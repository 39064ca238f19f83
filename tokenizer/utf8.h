// UTF-8 helpers shared by the tokenizer stages: validation, code point iteration, lossy decoding
// (one U+FFFD per maximal invalid subpart, as Rust's from_utf8_lossy and WHATWG do) and GPT-2's
// byte-level alphabet. Stateless functions; thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace loraserve::tokenizer {

inline constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// Byte offset of the first byte that does not start a well-formed UTF-8 sequence, or nullopt.
std::optional<size_t> find_invalid_utf8(std::string_view s);

// Decodes the code point at s[*pos] and advances *pos past it.
// REQUIRES: s is valid UTF-8 and *pos < s.size() is at a character boundary.
char32_t next_code_point(std::string_view s, size_t* pos);

// Length in bytes of the UTF-8 sequence that starts with `lead`, for valid text (1 to 4).
inline size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

void append_utf8(char32_t cp, std::string* out);

// Valid UTF-8 from any bytes: each maximal subpart of an ill-formed sequence becomes U+FFFD.
std::string decode_utf8_lossy(std::string_view bytes);

// Unicode White_Space (what Rust's char::is_whitespace tests).
bool is_unicode_whitespace(char32_t cp);

// GPT-2's reversible byte <-> printable character mapping (ByteLevel pre-tokenizer, decoder).
class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& get();

  // The UTF-8 of the character that stands for byte b (one or two bytes: all are below U+0800).
  std::string_view encode(uint8_t b) const { return {utf8_[b].data(), length_[b]}; }
  // Appends the byte-level spelling of `text` (every byte mapped) to *out.
  void encode(std::string_view text, std::string* out) const;
  // The byte a character stands for, or nullopt when the character is not in the alphabet.
  std::optional<uint8_t> decode(char32_t cp) const;

 private:
  ByteLevelAlphabet();
  std::array<std::array<char, 2>, 256> utf8_;
  std::array<uint8_t, 256> length_;
  std::array<int16_t, 324> byte_of_;  // indexed by code point; -1 where none (all are < 324)
};

}  // namespace loraserve::tokenizer
