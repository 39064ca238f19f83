// UTF-8 text as Python's str sees it: code points, whitespace (str.isspace), printability
// (str.isprintable, for repr), case mappings (str.upper/lower/title/capitalize, full mappings
// as Python applies them) and character classes. Character data from utf8proc (Unicode 15;
// Python 3.11 has Unicode 14, so code points assigned in 15 may differ) plus the unconditional
// multi-character mappings of SpecialCasing.txt. Stateless, thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace loraserve::chat::unicode {

bool is_valid_utf8(std::string_view text);
bool is_ascii(std::string_view text);
// REQUIRES: valid UTF-8 (every function below assumes it).
std::u32string decode(std::string_view text);
std::string encode(std::u32string_view text);
void append(std::string& out, char32_t c);
size_t length(std::string_view text);  // in code points
// Byte offset of code point `index` (index <= length; returns text.size() for length).
size_t offset_of(std::string_view text, size_t index);

bool is_space(char32_t c);      // str.isspace / re's \s
bool is_printable(char32_t c);  // str.isprintable
bool is_alpha(char32_t c);
bool is_decimal(char32_t c);    // category Nd (str.isdecimal)
bool is_digit(char32_t c);      // str.isdigit: decimal digits and Numeric_Type=Digit (², ①...)
int decimal_value(char32_t c);  // 0-9 for a decimal digit of any script, else -1
bool is_numeric(char32_t c);    // str.isnumeric: categories Nd, Nl, No, and numeric ideographs
bool is_alnum(char32_t c);
bool is_word(char32_t c);  // re's \w: alphanumeric or underscore
bool is_lower(char32_t c);
bool is_upper(char32_t c);
bool is_title(char32_t c);  // category Lt
bool is_cased(char32_t c);
bool is_line_break(char32_t c);  // the separators str.splitlines splits at

std::string upper(std::string_view text);
std::string lower(std::string_view text);
std::string capitalize(std::string_view text);  // str.capitalize
std::string title(std::string_view text);       // str.title
std::string swapcase(std::string_view text);
std::string casefold(std::string_view text);  // full case folding (utf8proc's is Python's)

}  // namespace loraserve::chat::unicode
