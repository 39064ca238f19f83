#include "common/excerpt.h"

#include <fmt/format.h>

#include <cstdint>

namespace loraserve {
namespace {

// Length of the valid UTF-8 sequence at text[pos] (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF) and its code point; 0 when the bytes there are not one.
size_t decode_utf8(std::string_view text, size_t pos, char32_t* cp) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[pos + i]); };
  const uint8_t b0 = byte(0);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  size_t n = 0;
  char32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2;
    *cp = b0 & 0x1F;
    min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3;
    *cp = b0 & 0x0F;
    min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4;
    *cp = b0 & 0x07;
    min = 0x10000;
  } else {
    return 0;
  }
  if (pos + n > text.size()) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return 0;
    *cp = (*cp << 6) | (byte(i) & 0x3F);
  }
  if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return 0;
  return n;
}

// Code points that would break a log line or reorder what a reader sees.
bool must_escape(char32_t cp) {
  return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 ||
         (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200E ||
         cp == 0x200F || cp == 0xFEFF;
}

// Appends the escaped form of the character (or invalid byte) at text[*pos] and advances *pos.
// `quoted`: the text is shown between single quotes, so a quote is escaped too.
void append_escaped_char(std::string_view text, size_t* pos, bool quoted, std::string* out) {
  char32_t cp = 0;
  const size_t n = decode_utf8(text, *pos, &cp);
  if (n == 0) {
    out->append(fmt::format("\\x{:02X}", static_cast<uint8_t>(text[*pos])));
    ++*pos;
    return;
  }
  switch (cp) {
    case '\n':
      out->append("\\n");
      break;
    case '\r':
      out->append("\\r");
      break;
    case '\t':
      out->append("\\t");
      break;
    case '\\':
      out->append("\\\\");
      break;
    case '\'':
      out->append(quoted ? "\\'" : "'");
      break;
    default:
      if (!must_escape(cp)) {
        out->append(text.substr(*pos, n));
      } else if (cp < 0x80) {
        out->append(fmt::format("\\x{:02X}", static_cast<uint32_t>(cp)));
      } else {
        out->append(fmt::format("\\u{:04X}", static_cast<uint32_t>(cp)));
      }
  }
  *pos += n;
}

}  // namespace

std::string escape_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) append_escaped_char(text, &pos, /*quoted=*/false, &out);
  return out;
}

std::string excerpt(std::string_view text, size_t max_bytes) {
  std::string shown;
  size_t pos = 0;
  std::string piece;
  while (pos < text.size()) {
    size_t next = pos;
    piece.clear();
    append_escaped_char(text, &next, /*quoted=*/true, &piece);
    if (shown.size() + piece.size() > max_bytes) break;
    shown += piece;
    pos = next;
  }
  if (pos == text.size()) return "'" + shown + "'";
  return fmt::format("'{}…' ({} bytes)", shown, text.size());
}

namespace excerpt_internal {

std::string describe_json(nlohmann::json::value_t type, size_t size) {
  switch (type) {
    case nlohmann::json::value_t::object:
      return fmt::format("an object of {} keys", size);
    case nlohmann::json::value_t::array:
      return fmt::format("an array of {} items", size);
    case nlohmann::json::value_t::string:
      return fmt::format("a string of {} bytes", size);
    default:
      return "a number";
  }
}

std::string cut_escaped(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  // Back off to a character border, then off a partial escape ("\x4" or "\u20").
  while (cut > 0 && (static_cast<uint8_t>(text[cut]) & 0xC0) == 0x80) --cut;
  const size_t backslash = text.rfind('\\', cut == 0 ? 0 : cut - 1);
  if (backslash != std::string::npos && cut - backslash < 6) {
    // Count the backslashes before it: an even run means this one starts an escape.
    size_t run = 0;
    while (backslash >= run + 1 && text[backslash - run - 1] == '\\') ++run;
    if (run % 2 == 0) {
      const char kind = backslash + 1 < text.size() ? text[backslash + 1] : '\0';
      const size_t len = kind == 'x' ? 4 : kind == 'u' ? 6 : 2;
      if (backslash + len > cut) cut = backslash;
    }
  }
  return text.substr(0, cut);
}

}  // namespace excerpt_internal

}  // namespace loraserve
