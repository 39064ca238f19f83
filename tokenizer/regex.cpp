#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

// JavaScript's \s: WhiteSpace and LineTerminator (tab, VT, FF, BOM, every Zs, LF, CR, LS, PS).
constexpr std::string_view kJsSpaceMembers = "\\t\\n\\x0B\\f\\r\\x{FEFF}\\p{Z}";

// The case-insensitive contraction group of GPT-style patterns, as the reference rewrites it.
constexpr std::string_view kContractions = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
constexpr std::string_view kContractionsAscii =
    "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0)
    return fmt::format("code {}", code);
  return reinterpret_cast<const char*>(buffer);
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Per-thread matching state: a match context with a JIT stack large enough for long inputs.
struct ThreadMatchState {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadMatchState() {
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    if (context != nullptr && jit_stack != nullptr) {
      pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
  }
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

}  // namespace

Result<std::string> translate_pattern(std::string_view pattern) {
  std::string src(pattern);
  for (size_t at = src.find(kContractions); at != std::string::npos;
       at = src.find(kContractions, at + kContractionsAscii.size())) {
    src.replace(at, kContractions.size(), kContractionsAscii);
  }
  std::string out;
  out.reserve(src.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < src.size(); ++i) {
    const char c = src[i];
    if (c == '\\') {
      if (i + 1 >= src.size()) return invalid_argument_error("pattern ends with a lone backslash");
      const char e = src[++i];
      if (e == 's') {
        out += in_class ? std::string(kJsSpaceMembers) : fmt::format("[{}]", kJsSpaceMembers);
      } else if (e == 'S') {
        if (in_class) {
          return invalid_argument_error(
              "\\S inside a character class (at offset {}) is not supported", i - 1);
        }
        out += fmt::format("[^{}]", kJsSpaceMembers);
      } else if (e == 'u' && i + 1 < src.size() && src[i + 1] == '{') {
        const size_t close = src.find('}', i + 2);
        if (close == std::string::npos) return invalid_argument_error("unterminated \\u{{...}}");
        out += fmt::format("\\x{{{}}}", src.substr(i + 2, close - i - 2));
        i = close;
      } else if (e == 'u' && i + 4 < src.size() && is_hex(src[i + 1]) && is_hex(src[i + 2]) &&
                 is_hex(src[i + 3]) && is_hex(src[i + 4])) {
        out += fmt::format("\\x{{{}}}", src.substr(i + 1, 4));
        i += 4;
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      if (i + 1 < src.size() && src[i + 1] == '^') out.push_back(src[++i]);
      if (i + 1 < src.size() && src[i + 1] == ']') out.push_back(src[++i]);  // literal ']'
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

Result<std::unique_ptr<Regex>> Regex::build(const std::string& pcre_pattern, uint32_t options,
                                            std::string shown, const std::string& where) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre_pattern.data()), pcre_pattern.size(),
                    PCRE2_UTF | options, &error, &offset, nullptr);
  if (code == nullptr) {
    return invalid_argument_error("{}: cannot compile pattern {}: {} at offset {}", where,
                                  excerpt(shown), pcre2_message(error), offset);
  }
  // Without JIT support PCRE2 interprets the pattern: slower, same matches.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Regex>(new Regex(code, std::move(shown)));
}

Result<std::unique_ptr<Regex>> Regex::compile(std::string_view pattern, const std::string& where) {
  if (auto bad = find_invalid_utf8(pattern)) {
    return invalid_argument_error("{}: pattern is not valid UTF-8 (byte {})", where, *bad);
  }
  auto translated = translate_pattern(pattern);
  if (!translated.ok()) {
    return Status(
        translated.status().code(),
        fmt::format("{}: pattern {}: {}", where, excerpt(pattern), translated.status().message()));
  }
  return build(*translated, 0, std::string(pattern), where);
}

Result<std::unique_ptr<Regex>> Regex::literal(std::string_view literal, const std::string& where) {
  if (literal.empty()) return invalid_argument_error("{}: the pattern string is empty", where);
  if (auto bad = find_invalid_utf8(literal)) {
    return invalid_argument_error("{}: pattern is not valid UTF-8 (byte {})", where, *bad);
  }
  return build(std::string(literal), PCRE2_LITERAL, std::string(literal), where);
}

Result<std::vector<Match>> Regex::find_all(std::string_view text) const {
  std::vector<Match> matches;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  if (data == nullptr) return resource_exhausted_error("out of memory for regex match data");
  ThreadMatchState& state = thread_match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  Status status;
  while (start <= text.size()) {
    const int rc =
        pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      status = resource_exhausted_error("matching pattern {} on {} bytes failed: {}",
                                        excerpt(pattern_), text.size(), pcre2_message(rc));
      break;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t begin = ovector[0], end = ovector[1];
    if (end == begin) {  // empty match: never a piece; search again one character later
      if (begin >= text.size()) break;
      start = begin + utf8_length(static_cast<unsigned char>(text[begin]));
      continue;
    }
    matches.push_back({begin, end});
    start = end;
  }
  pcre2_match_data_free(data);
  if (!status.ok()) return status;
  return matches;
}

Result<std::string> Regex::replace_all(std::string_view text, std::string_view replacement) const {
  LS_ASSIGN_OR_RETURN(std::vector<Match> matches, find_all(text));
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const Match& m : matches) {
    out.append(text.substr(prev, m.begin - prev));
    out.append(replacement);
    prev = m.end;
  }
  out.append(text.substr(prev));
  return out;
}

Result<std::unique_ptr<Regex>> make_pattern(const json& config, const std::string& path) {
  if (config.is_object() && config.size() == 1) {
    if (const json* s = find_field(config, "String"); s != nullptr && s->is_string()) {
      return Regex::literal(s->get<std::string>(), path);
    }
    if (const json* r = find_field(config, "Regex"); r != nullptr && r->is_string()) {
      return Regex::compile(r->get<std::string>(), path);
    }
  }
  return invalid_argument_error("{}: expected {{\"String\": ...}} or {{\"Regex\": ...}}, got {}",
                                path, shown(config));
}

}  // namespace loraserve::tokenizer
