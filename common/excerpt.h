// Excerpts of untrusted input for messages and log lines. Whatever a client or a file supplies
// (task ids, paths, patterns, JSON values, file bytes) reaches a Status or a log line only
// through these: a short prefix, cut at a character border, with control characters, invalid
// UTF-8, quotes and backslashes escaped, and the full length when the input was cut. So a
// message stays one printable line of valid UTF-8 of bounded size, whatever the input.
// Stateless functions; thread-safe.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace loraserve {

// Bytes of input an excerpt shows by default; paths get more (they are often long and their
// end matters as much as their start).
inline constexpr size_t kExcerptBytes = 64;
inline constexpr size_t kPathExcerptBytes = 200;

// 'text' when `text` fits in `max_bytes`, else 'prefix…' (N bytes). The prefix holds at most
// `max_bytes` bytes of escaped text: \n \r \t \\ \' as such, other C0/C1 controls, DEL, line and
// paragraph separators and bidirectional overrides as \xNN or \uNNNN, and each byte of invalid
// UTF-8 as \xNN.
std::string excerpt(std::string_view text, size_t max_bytes = kExcerptBytes);

// The bytes of `text` escaped as excerpt() does (but for quotes, which stay as they are),
// without quotes around it or cutting. For text that is known to be short but may hold any byte.
std::string escape_text(std::string_view text);

// A JSON value as messages show it: its compact JSON text when that fits in `max_bytes`, else
// the first `max_bytes` bytes of it, then "…" and what the value is ("an array of 3 items", "a
// string of 5000 bytes"). Never serializes more than it shows, so a huge or deep value costs no
// more than a short one. Strings inside are escaped as excerpt() does.
template <typename Json>
std::string json_excerpt(const Json& value, size_t max_bytes = kExcerptBytes);

namespace excerpt_internal {

// Appends `value`'s compact JSON text to `out` while out->size() <= limit; returns false once it
// has stopped short.
template <typename Json>
bool append_json(const Json& value, size_t limit, std::string* out) {
  if (out->size() > limit) return false;
  switch (value.type()) {
    case nlohmann::json::value_t::object: {
      out->push_back('{');
      bool first = true;
      for (auto it = value.begin(); it != value.end(); ++it) {
        if (!first) out->push_back(',');
        first = false;
        out->push_back('"');
        out->append(escape_text(it.key().substr(0, limit)));
        out->append("\":");
        if (!append_json(it.value(), limit, out)) return false;
      }
      out->push_back('}');
      break;
    }
    case nlohmann::json::value_t::array: {
      out->push_back('[');
      bool first = true;
      for (const auto& element : value) {
        if (!first) out->push_back(',');
        first = false;
        if (!append_json(element, limit, out)) return false;
      }
      out->push_back(']');
      break;
    }
    case nlohmann::json::value_t::string: {
      const auto& s = value.template get_ref<const std::string&>();
      out->push_back('"');
      out->append(escape_text(std::string_view(s).substr(0, limit)));
      out->push_back('"');
      break;
    }
    default:
      out->append(value.dump());
      break;
  }
  return out->size() <= limit;
}

std::string describe_json(nlohmann::json::value_t type, size_t size);
// Cuts `text` (escaped already) to at most `max_bytes` without splitting an escape or a
// character.
std::string cut_escaped(const std::string& text, size_t max_bytes);

}  // namespace excerpt_internal

template <typename Json>
std::string json_excerpt(const Json& value, size_t max_bytes) {
  std::string text;
  if (excerpt_internal::append_json(value, max_bytes, &text)) return text;
  const size_t size =
      value.is_string() ? value.template get_ref<const std::string&>().size() : value.size();
  return excerpt_internal::cut_escaped(text, max_bytes) + "… (" +
         excerpt_internal::describe_json(value.type(), size) + ")";
}

}  // namespace loraserve
