#include "chat/jinja_lexer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>

#include "chat/jinja_value.h"
#include "chat/py_ops.h"
#include "chat/unicode_text.h"

namespace loraserve::chat::jinja {
namespace {

[[noreturn]] void syntax_error(std::string message, int line) {
  throw TemplateError("TemplateSyntaxError", std::move(message), line);
}

// Jinja's operators, longest first so that `//` wins over `/`.
constexpr std::array<std::string_view, 25> kOperators = {
    "//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
    "]",  "(",  ")",  "{",  "}",  ">",  "<", "=", ".", ":", "|", ","};

int count_newlines(std::string_view text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

// Python's str.isspace over UTF-8, one code point at `pos`; returns its byte length or 0.
size_t space_at(std::string_view s, size_t pos) {
  if (pos >= s.size()) return 0;
  const auto b = static_cast<unsigned char>(s[pos]);
  if (b < 0x80) return unicode::is_space(b) ? 1 : 0;
  const size_t n = b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  if (pos + n > s.size()) return 0;
  const std::u32string c = unicode::decode(s.substr(pos, n));
  return !c.empty() && unicode::is_space(c[0]) ? n : 0;
}

size_t skip_spaces(std::string_view s, size_t pos) {
  while (size_t n = space_at(s, pos)) pos += n;
  return pos;
}

// Python's str.rstrip() (Unicode whitespace).
std::string_view rstrip(std::string_view text) {
  const std::u32string cps = unicode::decode(text);
  size_t keep = cps.size();
  while (keep > 0 && unicode::is_space(cps[keep - 1])) --keep;
  return text.substr(0, unicode::offset_of(text, keep));
}

bool all_spaces(std::string_view text) {
  if (text.empty()) return false;
  for (char32_t c : unicode::decode(text)) {
    if (!unicode::is_space(c)) return false;
  }
  return true;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// `(\d+_)*\d+` at pos: the end of the match, or npos.
size_t match_digits(std::string_view s, size_t pos) {
  if (pos >= s.size() || !is_digit(s[pos])) return std::string_view::npos;
  size_t i = pos;
  while (true) {
    while (i < s.size() && is_digit(s[i])) ++i;
    if (i + 1 < s.size() && s[i] == '_' && is_digit(s[i + 1])) {
      ++i;
      continue;
    }
    return i;
  }
}

// Jinja's float_re: digits, then an exponent (optionally after a fraction) or a fraction.
size_t match_float(std::string_view s, size_t pos) {
  if (pos > 0 && s[pos - 1] == '.') return std::string_view::npos;
  const size_t whole = match_digits(s, pos);
  if (whole == std::string_view::npos) return whole;
  auto exponent = [&](size_t at) -> size_t {
    if (at >= s.size() || (s[at] != 'e' && s[at] != 'E')) return std::string_view::npos;
    ++at;
    if (at < s.size() && (s[at] == '+' || s[at] == '-')) ++at;
    return match_digits(s, at);
  };
  size_t fraction = std::string_view::npos;
  if (whole < s.size() && s[whole] == '.') fraction = match_digits(s, whole + 1);
  if (fraction != std::string_view::npos) {
    if (size_t end = exponent(fraction); end != std::string_view::npos) return end;
  }
  if (size_t end = exponent(whole); end != std::string_view::npos) return end;
  return fraction;
}

// Jinja's integer_re (binary, octal, hex, decimal, zeros); the end, or npos.
size_t match_integer(std::string_view s, size_t pos, int* base) {
  auto repeated = [&](size_t at, auto digit_ok) -> size_t {
    size_t end = std::string_view::npos;
    while (true) {
      size_t i = at;
      if (i < s.size() && s[i] == '_') ++i;
      if (i < s.size() && digit_ok(s[i])) {
        at = end = i + 1;
      } else {
        return end;
      }
    }
  };
  if (pos + 1 < s.size() && s[pos] == '0') {
    const char p = static_cast<char>(s[pos + 1] | 0x20);
    size_t end = std::string_view::npos;
    if (p == 'b') {
      end = repeated(pos + 2, [](char c) { return c == '0' || c == '1'; });
      *base = 2;
    } else if (p == 'o') {
      end = repeated(pos + 2, [](char c) { return c >= '0' && c <= '7'; });
      *base = 8;
    } else if (p == 'x') {
      end = repeated(pos + 2,
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
      *base = 16;
    }
    if (end != std::string_view::npos) return end;
  }
  *base = 10;
  if (pos < s.size() && s[pos] >= '1' && s[pos] <= '9') {
    const size_t end = repeated(pos + 1, is_digit);
    return end == std::string_view::npos ? pos + 1 : end;
  }
  if (pos < s.size() && s[pos] == '0') {
    const size_t end = repeated(pos + 1, [](char c) { return c == '0'; });
    return end == std::string_view::npos ? pos + 1 : end;
  }
  return std::string_view::npos;
}

// A name: Unicode word characters (the integer rule runs first, so it never starts with a digit).
size_t match_name(std::string_view s, size_t pos) {
  size_t i = pos;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (std::isalnum(b) || b == '_') {
        ++i;
        continue;
      }
      break;
    }
    const size_t n = b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    const std::u32string c = unicode::decode(s.substr(i, n));
    if (c.empty() || !unicode::is_word(c[0])) break;
    i += n;
  }
  return i == pos ? std::string_view::npos : i;
}

// Python's `literal.encode("ascii", "backslashreplace").decode("unicode-escape")`, which is how
// Jinja decodes string literals.
std::string decode_string_literal(std::string_view raw, int line) {
  std::string ascii;
  for (char32_t c : unicode::decode(raw)) {
    if (c < 0x80) {
      ascii += static_cast<char>(c);
    } else if (c < 0x100) {
      ascii += fmt::format("\\x{:02x}", static_cast<unsigned>(c));
    } else if (c < 0x10000) {
      ascii += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    } else {
      ascii += fmt::format("\\U{:08x}", static_cast<unsigned>(c));
    }
  }
  std::string out;
  size_t i = 0;
  auto hex_escape = [&](size_t digits, const char* what) {
    if (i + digits > ascii.size() ||
        !std::all_of(ascii.begin() + static_cast<std::ptrdiff_t>(i),
                     ascii.begin() + static_cast<std::ptrdiff_t>(i + digits),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; })) {
      syntax_error(fmt::format("truncated {} escape", what), line);
    }
    const auto value = static_cast<char32_t>(std::stoul(ascii.substr(i, digits), nullptr, 16));
    i += digits;
    if (value > 0x10FFFF) syntax_error("illegal Unicode character", line);
    if (value >= 0xD800 && value <= 0xDFFF) {
      syntax_error("a string literal holds a lone surrogate, which is not valid text", line);
    }
    unicode::append(out, value);
  };
  while (i < ascii.size()) {
    const char c = ascii[i++];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (i >= ascii.size()) syntax_error("\\ at end of string", line);
    const char e = ascii[i++];
    switch (e) {
      case '\n':
        break;
      case '\\':
      case '\'':
      case '"':
        out += e;
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x':
        hex_escape(2, "\\xXX");
        break;
      case 'u':
        hex_escape(4, "\\uXXXX");
        break;
      case 'U':
        hex_escape(8, "\\UXXXXXXXX");
        break;
      case 'N':
        syntax_error("\\N{name} escapes are not supported by loraserve's template renderer", line);
      default:
        if (e >= '0' && e <= '7') {
          char32_t value = static_cast<char32_t>(e - '0');
          for (int k = 0; k < 2 && i < ascii.size() && ascii[i] >= '0' && ascii[i] <= '7'; ++k) {
            value = value * 8 + static_cast<char32_t>(ascii[i++] - '0');
          }
          unicode::append(out, value);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : s_(std::move(source)) {}

  std::vector<Token> run() {
    while (pos_ < s_.size()) root();
    push(Token::Type::kEof, "");
    return std::move(tokens_);
  }

 private:
  enum class Tag { kVariable, kBlock, kComment, kRaw };

  void push(Token::Type type, std::string text) {
    Token t;
    t.type = type;
    t.text = std::move(text);
    t.line = line_;
    tokens_.push_back(std::move(t));
  }

  // The data before a tag, then the tag.
  void root() {
    size_t p = pos_;
    Tag tag = Tag::kVariable;
    size_t raw_end = std::string::npos;
    for (;; ++p) {
      p = s_.find('{', p);
      if (p == std::string::npos || p + 1 >= s_.size()) {
        p = std::string::npos;
        break;
      }
      const char next = s_[p + 1];
      if (next == '%') {
        raw_end = match_raw_begin(p);
        tag = raw_end != std::string::npos ? Tag::kRaw : Tag::kBlock;
        break;
      }
      if (next == '{') {
        tag = Tag::kVariable;
        break;
      }
      if (next == '#') {
        tag = Tag::kComment;
        break;
      }
    }
    if (p == std::string::npos) {
      push(Token::Type::kData, s_.substr(pos_));
      line_ += count_newlines(tokens_.back().text);
      pos_ = s_.size();
      return;
    }
    const char sign = p + 2 < s_.size() && (s_[p + 2] == '-' || s_[p + 2] == '+') ? s_[p + 2] : 0;
    emit_data(std::string_view(s_).substr(pos_, p - pos_), sign, tag != Tag::kVariable);
    switch (tag) {
      case Tag::kRaw:
        line_ += count_newlines(std::string_view(s_).substr(p, raw_end - p));
        line_starting_ = s_[raw_end - 1] == '\n';
        pos_ = raw_end;
        raw();
        return;
      case Tag::kComment:
        pos_ = p + 2 + (sign != 0);
        comment();
        return;
      case Tag::kVariable:
      case Tag::kBlock:
        push(tag == Tag::kVariable ? Token::Type::kVariableBegin : Token::Type::kBlockBegin, "");
        pos_ = p + 2 + (sign != 0);
        inside_tag(tag);
        return;
    }
  }

  // Text before a tag, with `-` (strip all whitespace before) and lstrip_blocks (strip the
  // indentation of a block or comment tag that starts its line) applied.
  void emit_data(std::string_view text, char sign, bool lstrip_applies) {
    int newlines_stripped = 0;
    if (sign == '-') {
      const std::string_view stripped = rstrip(text);
      newlines_stripped = count_newlines(text.substr(stripped.size()));
      text = stripped;
    } else if (sign != '+' && lstrip_applies) {
      const size_t newline = text.rfind('\n');
      const size_t line_start = newline == std::string_view::npos ? 0 : newline + 1;
      if ((line_start > 0 || line_starting_) && all_spaces(text.substr(line_start))) {
        text = text.substr(0, line_start);
      }
    }
    if (!text.empty()) push(Token::Type::kData, std::string(text));
    line_ += count_newlines(text) + newlines_stripped;
  }

  // `{%[-+]?\s*raw\s*(-%}\s*|%})` at p: the end of the match, or npos.
  size_t match_raw_begin(size_t p) const {
    size_t i = p + 2;
    if (i < s_.size() && (s_[i] == '-' || s_[i] == '+')) ++i;
    i = skip_spaces(s_, i);
    if (s_.compare(i, 3, "raw") != 0) return std::string::npos;
    i = skip_spaces(s_, i + 3);
    if (s_.compare(i, 3, "-%}") == 0) return skip_spaces(s_, i + 3);
    if (s_.compare(i, 2, "%}") == 0) return i + 2;
    return std::string::npos;
  }

  // A tag end at pos_: `+X}`, `-X}` and the whitespace after it, or `X}` and (for blocks and
  // comments, trim_blocks) one newline after it. Returns the end, or npos.
  size_t match_tag_end(size_t at, char closer, bool trim) const {
    const char end[3] = {closer, '}', '\0'};
    if (s_.compare(at, 1, "+") == 0 && s_.compare(at + 1, 2, end) == 0 && trim) return at + 3;
    if (s_.compare(at, 1, "-") == 0 && s_.compare(at + 1, 2, end) == 0) {
      return skip_spaces(s_, at + 3);
    }
    if (s_.compare(at, 2, end) == 0) {
      size_t e = at + 2;
      if (trim && e < s_.size() && s_[e] == '\n') ++e;
      return e;
    }
    return std::string::npos;
  }

  void end_tag(size_t end, Token::Type type) {
    push(type, "");
    line_ += count_newlines(std::string_view(s_).substr(pos_, end - pos_));
    line_starting_ = s_[end - 1] == '\n';
    pos_ = end;
  }

  void comment() {
    for (size_t p = pos_; p < s_.size(); ++p) {
      if (s_[p] != '#' && s_[p] != '-' && s_[p] != '+') continue;
      const size_t end = match_tag_end(p, '#', true);
      if (end == std::string::npos) continue;
      line_ += count_newlines(std::string_view(s_).substr(pos_, end - pos_));
      line_starting_ = s_[end - 1] == '\n';
      pos_ = end;
      return;
    }
    syntax_error("Missing end of comment tag", line_);
  }

  void raw() {
    for (size_t p = s_.find("{%", pos_); p != std::string::npos; p = s_.find("{%", p + 1)) {
      size_t i = p + 2;
      const char sign = i < s_.size() && (s_[i] == '-' || s_[i] == '+') ? s_[i] : 0;
      if (sign != 0) ++i;
      i = skip_spaces(s_, i);
      if (s_.compare(i, 6, "endraw") != 0) continue;
      i = skip_spaces(s_, i + 6);
      const size_t end = match_tag_end(i, '%', true);
      if (end == std::string::npos) continue;
      emit_data(std::string_view(s_).substr(pos_, p - pos_), sign, true);
      line_ += count_newlines(std::string_view(s_).substr(p, end - p));
      line_starting_ = s_[end - 1] == '\n';
      pos_ = end;
      return;
    }
    syntax_error("Missing end of raw directive", line_);
  }

  void inside_tag(Tag tag) {
    const char closer = tag == Tag::kVariable ? '}' : '%';
    const auto end_type =
        tag == Tag::kVariable ? Token::Type::kVariableEnd : Token::Type::kBlockEnd;
    std::vector<char> balance;
    while (pos_ < s_.size()) {
      if (balance.empty()) {
        const size_t end = match_tag_end(pos_, closer, tag == Tag::kBlock);
        if (end != std::string::npos) {
          end_tag(end, end_type);
          return;
        }
      }
      if (size_t end = skip_spaces(s_, pos_); end != pos_) {
        line_ += count_newlines(std::string_view(s_).substr(pos_, end - pos_));
        pos_ = end;
        continue;
      }
      if (size_t end = match_float(s_, pos_); end != std::string::npos) {
        std::string digits;
        for (size_t k = pos_; k < end; ++k) {
          if (s_[k] != '_') digits += s_[k];
        }
        push(Token::Type::kFloat, s_.substr(pos_, end - pos_));
        tokens_.back().number = std::strtod(digits.c_str(), nullptr);
        pos_ = end;
        continue;
      }
      int base = 10;
      if (size_t end = match_integer(s_, pos_, &base); end != std::string::npos) {
        std::string digits;
        for (size_t k = pos_ + (base == 10 ? 0 : 2); k < end; ++k) {
          if (s_[k] != '_') digits += s_[k];
        }
        errno = 0;
        const unsigned long long value = std::strtoull(digits.c_str(), nullptr, base);
        if (errno == ERANGE || value > static_cast<unsigned long long>(INT64_MAX)) {
          syntax_error(fmt::format("integer literal {} does not fit in 64 bits",
                                   s_.substr(pos_, end - pos_)),
                       line_);
        }
        push(Token::Type::kInteger, s_.substr(pos_, end - pos_));
        tokens_.back().integer = static_cast<int64_t>(value);
        pos_ = end;
        continue;
      }
      if (size_t end = match_name(s_, pos_); end != std::string::npos) {
        push(Token::Type::kName, s_.substr(pos_, end - pos_));
        pos_ = end;
        continue;
      }
      if (s_[pos_] == '\'' || s_[pos_] == '"') {
        if (string_literal()) continue;
      }
      bool matched = false;
      for (std::string_view op : kOperators) {
        if (s_.compare(pos_, op.size(), op) != 0) continue;
        track_balance(op, &balance);
        push(Token::Type::kOperator, std::string(op));
        pos_ += op.size();
        matched = true;
        break;
      }
      if (!matched) {
        const size_t n = unicode::offset_of(std::string_view(s_).substr(pos_), 1);
        syntax_error(fmt::format("unexpected char {} at {}", py::string_repr(s_.substr(pos_, n)),
                                 unicode::length(std::string_view(s_).substr(0, pos_))),
                     line_);
      }
    }
  }

  void track_balance(std::string_view op, std::vector<char>* balance) {
    if (op == "{" || op == "(" || op == "[") {
      balance->push_back(op == "{" ? '}' : op == "(" ? ')' : ']');
    } else if (op == "}" || op == ")" || op == "]") {
      if (balance->empty()) syntax_error(fmt::format("unexpected '{}'", op), line_);
      const char expected = balance->back();
      balance->pop_back();
      if (expected != op[0]) {
        syntax_error(fmt::format("unexpected '{}', expected '{}'", op, expected), line_);
      }
    }
  }

  bool string_literal() {
    const char quote = s_[pos_];
    size_t i = pos_ + 1;
    while (i < s_.size() && s_[i] != quote) {
      if (s_[i] == '\\') {
        if (i + 1 >= s_.size()) return false;
        i += 2;
        // A backslash escapes a whole code point.
        while (i < s_.size() && (static_cast<unsigned char>(s_[i]) & 0xC0) == 0x80) ++i;
        continue;
      }
      ++i;
    }
    if (i >= s_.size()) return false;
    const std::string_view raw = std::string_view(s_).substr(pos_ + 1, i - pos_ - 1);
    push(Token::Type::kString, decode_string_literal(raw, line_));
    line_ += count_newlines(raw);
    pos_ = i + 1;
    return true;
  }

  std::string s_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) {
  // Newlines normalised to \n, and one trailing newline dropped (keep_trailing_newline off).
  std::string normalized;
  normalized.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized += source[i];
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  return Lexer(std::move(normalized)).run();
}

std::string describe(const Token& token) {
  switch (token.type) {
    case Token::Type::kName:
    case Token::Type::kOperator:
      return token.text;
    case Token::Type::kData:
      return "template data / text";
    case Token::Type::kVariableBegin:
      return "begin of print statement";
    case Token::Type::kVariableEnd:
      return "end of print statement";
    case Token::Type::kBlockBegin:
      return "begin of statement block";
    case Token::Type::kBlockEnd:
      return "end of statement block";
    case Token::Type::kString:
      return "string";
    case Token::Type::kInteger:
      return "integer";
    case Token::Type::kFloat:
      return "float";
    case Token::Type::kEof:
      return "end of template";
  }
  return "token";
}

}  // namespace loraserve::chat::jinja
