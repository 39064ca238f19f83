#include "common/untrusted_json.h"

#include <atomic>

#include "common/excerpt.h"

namespace loraserve {
namespace {

std::atomic<uint64_t> g_max_bytes{JsonLimits{}.max_bytes};
std::atomic<uint64_t> g_max_config_bytes{JsonLimits{}.max_config_bytes};
std::atomic<int32_t> g_max_depth{JsonLimits{}.max_depth};

// nlohmann's messages start with "[json.exception.<kind>.<id>] ".
std::string_view without_exception_id(std::string_view what) {
  if (what.starts_with("[json.exception.")) {
    const size_t close = what.find("] ");
    if (close != std::string_view::npos) what.remove_prefix(close + 2);
  }
  return what;
}

// At most `n` bytes of `text`, escaped; "…" when cut.
std::string bounded(std::string_view text, size_t n) {
  return escape_text(text.substr(0, n)) + (text.size() > n ? "…" : "");
}

// "... ; last read: '<token>'; expected ..." with the token cut to an excerpt: the token is
// whatever the lexer had read, which can be a whole long string of the input.
std::string cut_last_read(std::string_view reason) {
  constexpr std::string_view kLastRead = "; last read: '";
  const size_t start = reason.find(kLastRead);
  if (start == std::string_view::npos) return bounded(reason, 160);
  const size_t token_begin = start + kLastRead.size();
  size_t token_end = reason.rfind("'; expected ");
  if (token_end == std::string_view::npos || token_end < token_begin) token_end = reason.size() - 1;
  std::string out = bounded(reason.substr(0, start), 120);
  out += "; last read: ";
  out += excerpt(reason.substr(token_begin, token_end - token_begin), 32);
  if (token_end + 1 < reason.size()) out += bounded(reason.substr(token_end + 1), 120);
  return out;
}

// Calls `visit(i)` at each byte of `text` outside its strings (and their quotes), in order;
// `visit` may move i on past what it consumed. Stops at the first error `visit` returns.
template <typename Visit>
Status scan_outside_strings(std::string_view text, Visit visit) {
  bool in_string = false;
  bool escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      continue;
    }
    LS_RETURN_IF_ERROR(visit(i));
  }
  return ok_status();
}

// Whether a JSON number token is a float (fraction or exponent) or an integer in [-2^63, 2^64).
bool integer_fits_64_bits(std::string_view number) {
  if (number.find_first_of(".eE") != std::string_view::npos) return true;
  const bool negative = number.starts_with('-');
  std::string_view digits = number.substr(negative ? 1 : 0);
  while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
  const std::string_view limit = negative ? "9223372036854775808" : "18446744073709551615";
  if (digits.size() != limit.size()) return digits.size() < limit.size();
  return digits <= limit;
}

}  // namespace

JsonLimits json_limits() {
  return JsonLimits{g_max_bytes.load(std::memory_order_relaxed),
                    g_max_config_bytes.load(std::memory_order_relaxed),
                    g_max_depth.load(std::memory_order_relaxed)};
}

void set_json_limits(const JsonLimits& limits) {
  g_max_bytes.store(limits.max_bytes, std::memory_order_relaxed);
  g_max_config_bytes.store(limits.max_config_bytes, std::memory_order_relaxed);
  g_max_depth.store(limits.max_depth, std::memory_order_relaxed);
}

Status validate_json_limits(const JsonLimits& limits) {
  if (limits.max_bytes < 1) return invalid_argument_error("--max-json-bytes must be at least 1");
  if (limits.max_config_bytes < 1)
    return invalid_argument_error("--max-config-bytes must be at least 1");
  if (limits.max_depth < 1 || limits.max_depth > kMaxJsonDepthCeiling) {
    return invalid_argument_error("--max-json-depth must be in [1, {}], got {}",
                                  kMaxJsonDepthCeiling, limits.max_depth);
  }
  return ok_status();
}

ConfigFileCap config_file_cap(const JsonLimits& limits) {
  if (limits.max_config_bytes <= limits.max_bytes)
    return {limits.max_config_bytes, "--max-config-bytes"};
  return {limits.max_bytes, "--max-json-bytes"};
}

Status check_json_limits(std::string_view text, std::string_view source, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes) {
    return invalid_argument_error(
        "{}: {} bytes of JSON, more than the limit of {} (--max-json-bytes)", source, text.size(),
        limits.max_bytes);
  }
  // JSON never holds a raw NUL (not even in a string), and nlohmann would stop reading at one,
  // taking whatever follows it for the end of the input.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return invalid_argument_error("{}: not valid JSON: a NUL byte at byte {}", source, nul);
  }
  int64_t depth = 0;
  return scan_outside_strings(text, [&](size_t& i) {
    const char c = text[i];
    if (c == '[' || c == '{') {
      if (++depth > limits.max_depth) {
        return invalid_argument_error(
            "{}: JSON nested deeper than {} levels at byte {} (--max-json-depth)", source,
            limits.max_depth, i);
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    return ok_status();
  });
}

Status check_json_integers(std::string_view text, std::string_view source) {
  return scan_outside_strings(text, [&](size_t& i) {
    const char c = text[i];
    if (c != '-' && (c < '0' || c > '9')) return ok_status();
    const size_t begin = i;
    while (i + 1 < text.size() &&
           std::string_view("+-.eE0123456789").find(text[i + 1]) != std::string_view::npos) {
      ++i;
    }
    const std::string_view number = text.substr(begin, i + 1 - begin);
    if (!integer_fits_64_bits(number)) {
      return invalid_argument_error("{}: the integer {} at byte {} does not fit in 64 bits", source,
                                    excerpt(number, 32), begin);
    }
    return ok_status();
  });
}

Status json_parse_status(std::string_view source, const nlohmann::json::exception& e) {
  const std::string_view what = without_exception_id(e.what());
  if (const auto* pe = dynamic_cast<const nlohmann::json::parse_error*>(&e)) {
    // "parse error at line L, column C: <reason>"
    const size_t colon = what.find(": ");
    const std::string_view position =
        colon == std::string_view::npos ? std::string_view() : what.substr(0, colon);
    const std::string_view reason = colon == std::string_view::npos ? what : what.substr(colon + 2);
    std::string where;
    if (position.starts_with("parse error at ")) {
      where = fmt::format("{} (byte {})", bounded(position.substr(15), 48), pe->byte);
    } else {
      where = fmt::format("byte {}", pe->byte);
    }
    return invalid_argument_error("{}: not valid JSON at {}: {}", source, where,
                                  cut_last_read(reason));
  }
  return invalid_argument_error("{}: not valid JSON: {}", source, cut_last_read(what));
}

}  // namespace loraserve
