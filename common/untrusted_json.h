// Parsing JSON that anyone may have written (config.json, tokenizer.json, adapter_config.json,
// safetensors headers, --config). Before nlohmann_json sees a byte, the text is checked against
// a size cap and a nesting-depth cap by a flat scan (so a document nested a million levels deep
// is refused at the byte where it passes the cap, without recursion); errors name the source
// and the byte offset, and never echo more than an excerpt of the input. The caps are
// process-wide (--max-json-bytes, --max-config-bytes, --max-json-depth), set once at start-up;
// every function is thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "common/untrusted_file.h"

namespace loraserve {

struct JsonLimits {
  // Largest JSON file read (the safetensors header's own limit is the smaller of this and the
  // format's 100 MB).
  uint64_t max_bytes = 64ull << 20;
  // Largest small configuration file read: config.json, generation_config.json and
  // adapter_config.json, which real models and adapters keep to a few KB. Parsed, a JSON
  // document of many short values takes about 30 times its size (measured: a 60 MiB
  // adapter_config.json took 1.6 GB), and adapters load while serving.
  uint64_t max_config_bytes = 1ull << 20;
  // Deepest nesting of arrays and objects: `[]` is 1 level, `{"a": [1]}` 2.
  int32_t max_depth = 64;
};

// Allowed range of max_depth: deep enough for any real file, shallow enough that code walking
// a parsed document recursively stays far from the end of a thread's stack.
inline constexpr int32_t kMaxJsonDepthCeiling = 1000;

// The limits in force. Defaults: JsonLimits{}.
JsonLimits json_limits();
// REQUIRES: validate_json_limits(limits) is OK. Call before any thread reads files.
void set_json_limits(const JsonLimits& limits);
// INVALID_ARGUMENT naming the flag when a limit is out of range.
Status validate_json_limits(const JsonLimits& limits);

// The cap on a small configuration file (JsonLimits::max_config_bytes, or max_bytes when that
// is lower) and the flag that sets it, for ReadOnlyFile::read_all.
struct ConfigFileCap {
  uint64_t bytes;
  std::string_view flag;
};
ConfigFileCap config_file_cap(const JsonLimits& limits = json_limits());

// Checks `text` against `limits`: its size, and the nesting depth outside strings.
// INVALID_ARGUMENT naming `source`, the byte offset and the flag.
Status check_json_limits(std::string_view text, std::string_view source, const JsonLimits& limits);

// INVALID_ARGUMENT naming `source` and the byte where `text` holds an integer outside
// [-2^63, 2^64), which nlohmann would read as a double without a word (Python keeps it exact).
// For requests, whose values reach a chat template; files keep nlohmann's reading (tokenizer
// configs hold model_max_length = 1e30 written as an integer).
Status check_json_integers(std::string_view text, std::string_view source);

// The error for an exception nlohmann_json threw while parsing `source`: the line, column and
// byte offset, and the reason, with at most an excerpt of what it had read.
Status json_parse_status(std::string_view source, const nlohmann::json::exception& e);

// Parses untrusted `text` (`source` names it in errors) after check_json_limits.
template <typename Json = nlohmann::json>
Result<Json> parse_untrusted_json(std::string_view text, std::string_view source,
                                  const JsonLimits& limits = json_limits()) {
  LS_RETURN_IF_ERROR(check_json_limits(text, source, limits));
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    return json_parse_status(source, e);
  }
}

// Reads `file` (at most limits.max_bytes) and parses it.
template <typename Json = nlohmann::json>
Result<Json> read_json_file(const ReadOnlyFile& file, const JsonLimits& limits = json_limits()) {
  LS_ASSIGN_OR_RETURN(const std::string text, file.read_all(limits.max_bytes, "--max-json-bytes"));
  return parse_untrusted_json<Json>(text, file.name(), limits);
}

// Opens `path` (open_regular_file), reads and parses it.
template <typename Json = nlohmann::json>
Result<Json> read_json_file(const std::string& path, const JsonLimits& limits = json_limits()) {
  LS_ASSIGN_OR_RETURN(const ReadOnlyFile file, open_regular_file(path));
  return read_json_file<Json>(file, limits);
}

// Whether `j` has `key` with a value other than null (config files write null for "not set").
template <typename Json>
bool has_field(const Json& j, const char* key) {
  return j.contains(key) && !j[key].is_null();
}

// The integer `v` when it is one in [lo, hi], compared as 64-bit values before any narrowing;
// nullopt for anything else (a float, a string, an unsigned past INT64_MAX).
template <typename Json>
std::optional<int64_t> json_int_in_range(const Json& v, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) return std::nullopt;
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const auto u = v.template get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    x = static_cast<int64_t>(u);
  } else {
    x = v.template get<int64_t>();
  }
  if (x < lo || x > hi) return std::nullopt;
  return x;
}

}  // namespace loraserve
