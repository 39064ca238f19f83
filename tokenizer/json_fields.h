// Typed reads of tokenizer.json fields with errors that name the field's path, e.g.
// "pre_tokenizer.pretokenizers[0].behavior: expected a string, got 3". Internal to tokenizer/.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/excerpt.h"
#include "common/status.h"
#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {

using nlohmann::json;

inline std::string field_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : fmt::format("{}.{}", parent, key);
}

inline std::string element_path(const std::string& parent, size_t index) {
  return fmt::format("{}[{}]", parent, index);
}

// A JSON value as an error message shows it (common/excerpt.h): at most about 60 bytes.
inline std::string shown(const json& value) { return json_excerpt(value, 60); }

// REQUIRES: `object` is a JSON object. Returns nullptr when the key is absent.
inline const json* find_field(const json& object, std::string_view key) {
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

inline Status expect_object(const json& value, const std::string& path) {
  if (!value.is_object())
    return invalid_argument_error("{}: expected an object, got {}", path, shown(value));
  return ok_status();
}

inline Result<std::string> string_field(const json& object, std::string_view key,
                                        const std::string& parent) {
  const json* v = find_field(object, key);
  if (v == nullptr) return invalid_argument_error("{}: missing", field_path(parent, key));
  if (!v->is_string()) {
    return invalid_argument_error("{}: expected a string, got {}", field_path(parent, key),
                                  shown(*v));
  }
  return v->get<std::string>();
}

// A string field that may be absent or null (then `fallback`).
inline Result<std::string> optional_string_field(const json& object, std::string_view key,
                                                 const std::string& parent,
                                                 std::string fallback = "") {
  const json* v = find_field(object, key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_string()) {
    return invalid_argument_error("{}: expected a string, got {}", field_path(parent, key),
                                  shown(*v));
  }
  return v->get<std::string>();
}

inline Result<bool> bool_field(const json& object, std::string_view key, bool fallback,
                               const std::string& parent) {
  const json* v = find_field(object, key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_boolean()) {
    return invalid_argument_error("{}: expected true or false, got {}", field_path(parent, key),
                                  shown(*v));
  }
  return v->get<bool>();
}

inline Result<int64_t> int_field(const json& object, std::string_view key, int64_t fallback,
                                 const std::string& parent) {
  const json* v = find_field(object, key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_number_integer()) {
    return invalid_argument_error("{}: expected an integer, got {}", field_path(parent, key),
                                  shown(*v));
  }
  return v->get<int64_t>();
}

// A token id: an integer in [0, INT32_MAX).
inline Result<int32_t> token_id_value(const json& v, const std::string& path) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= INT32_MAX) {
    return invalid_argument_error("{}: expected a token id (a non-negative integer), got {}", path,
                                  shown(v));
  }
  return static_cast<int32_t>(v.get<int64_t>());
}

// A one-character string (Strip decoder's content, Metaspace's replacement).
inline Result<char32_t> single_char_field(const json& object, std::string_view key,
                                          const std::string& parent) {
  LS_ASSIGN_OR_RETURN(std::string s, string_field(object, key, parent));
  if (s.empty() || find_invalid_utf8(s).has_value() || utf8_length(s[0]) != s.size()) {
    return invalid_argument_error("{}: expected one character, got {}", field_path(parent, key),
                                  excerpt(s));
  }
  size_t pos = 0;
  return next_code_point(s, &pos);
}

}  // namespace loraserve::tokenizer
