// Splits a template into tokens exactly as Jinja2's lexer does with transformers' settings
// (trim_blocks and lstrip_blocks on, default delimiters, keep_trailing_newline off): data between
// tags, `{{ }}` / `{% %}` / `{# #}` with `-` and `+` whitespace control, `{% raw %}`, and inside
// tags names, numbers (with `_` separators, 0b/0o/0x), string literals (Python escapes) and
// operators, with brackets balanced. Errors are TemplateSyntaxErrors naming the line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loraserve::chat::jinja {

struct Token {
  enum class Type : uint8_t {
    kData,
    kVariableBegin,
    kVariableEnd,
    kBlockBegin,
    kBlockEnd,
    kName,
    kString,
    kInteger,
    kFloat,
    kOperator,
    kEof,
  };
  Type type = Type::kEof;
  std::string text;  // data, name, decoded string, or operator
  int64_t integer = 0;
  double number = 0.0;
  int line = 1;
};

// REQUIRES: `source` is valid UTF-8. Throws TemplateError on a lexical error.
std::vector<Token> tokenize(std::string_view source);

// How an error message names a token: "end of print statement", "'x'", "integer", ...
std::string describe(const Token& token);

}  // namespace loraserve::chat::jinja
