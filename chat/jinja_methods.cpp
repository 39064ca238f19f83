#include "chat/jinja_methods.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <functional>
#include <string_view>

#include "chat/py_format.h"
#include "chat/py_ops.h"
#include "chat/unicode_text.h"

namespace loraserve::chat::jinja::py {
namespace {

using Args = CallArgs;

// A string as code points when it is not ASCII, so that indices are Python's.
class Text {
 public:
  explicit Text(const std::string& s) : bytes_(s), ascii_(unicode::is_ascii(s)) {
    if (!ascii_) cps_ = unicode::decode(s);
  }
  size_t size() const { return ascii_ ? bytes_.size() : cps_.size(); }
  char32_t at(size_t i) const { return ascii_ ? static_cast<unsigned char>(bytes_[i]) : cps_[i]; }
  std::string slice(size_t begin, size_t end) const {
    if (ascii_) return bytes_.substr(begin, end - begin);
    return unicode::encode(std::u32string_view(cps_).substr(begin, end - begin));
  }
  // Index of the first (or last) occurrence of `sub` within [begin, end), or npos.
  size_t find(const Text& sub, size_t begin, size_t end, bool reverse) const {
    const size_t n = sub.size();
    if (end < begin || end - begin < n) return std::string::npos;
    auto matches = [&](size_t at) {
      for (size_t k = 0; k < n; ++k) {
        if (this->at(at + k) != sub.at(k)) return false;
      }
      return true;
    };
    charge((end - begin) / 16);
    if (reverse) {
      for (size_t at = end - n + 1; at-- > begin;) {
        if (matches(at)) return at;
      }
    } else {
      for (size_t at = begin; at + n <= end; ++at) {
        if (matches(at)) return at;
      }
    }
    return std::string::npos;
  }

 private:
  const std::string& bytes_;
  bool ascii_;
  std::u32string cps_;
};

void expect_count(const std::string& name, const Args& args, size_t min, size_t max) {
  if (!args.keyword.empty()) throw_type_error(fmt::format("{}() takes no keyword arguments", name));
  const size_t n = args.positional.size();
  if (n < min || n > max) {
    if (min == max) {
      throw_type_error(fmt::format("{}() takes exactly {} argument{} ({} given)", name, min,
                                   min == 1 ? "" : "s", n));
    }
    throw_type_error(n < min ? fmt::format("{} expected at least {} argument{}, got {}", name, min,
                                           min == 1 ? "" : "s", n)
                             : fmt::format("{} expected at most {} argument{}, got {}", name, max,
                                           max == 1 ? "" : "s", n));
  }
}

const std::string& string_arg(const std::string& name, const Value& v) {
  if (!v.is_string()) {
    throw_type_error(fmt::format("{}() argument must be str, not {}", name, v.type_name()));
  }
  return v.str();
}

int64_t int_arg(const Value& v) {
  if (!v.is_int_like()) {
    throw_type_error(fmt::format("'{}' object cannot be interpreted as an integer", v.type_name()));
  }
  return v.as_int();
}

// Python's slice-style clamping of optional start/end arguments to [0, size].
std::pair<size_t, size_t> range_args(const Args& args, size_t first, size_t size) {
  auto clamp = [size](const Value& v, int64_t fallback) -> int64_t {
    if (v.is_none()) return fallback;
    int64_t x = int_arg(v);
    if (x < 0) x = std::max<int64_t>(0, x + static_cast<int64_t>(size));
    return std::min<int64_t>(x, static_cast<int64_t>(size));
  };
  int64_t begin = 0, end = static_cast<int64_t>(size);
  if (args.positional.size() > first) begin = clamp(args.positional[first], 0);
  if (args.positional.size() > first + 1) {
    end = clamp(args.positional[first + 1], static_cast<int64_t>(size));
  }
  return {static_cast<size_t>(begin), static_cast<size_t>(std::max(begin, end))};
}

bool in_set(char32_t c, const std::u32string* chars) {
  if (chars == nullptr) return unicode::is_space(c);
  return chars->find(c) != std::u32string::npos;
}

std::string strip(const std::string& s, const Args& args, const std::string& name, bool left,
                  bool right) {
  expect_count(name, args, 0, 1);
  std::u32string chars;
  const std::u32string* set = nullptr;
  if (!args.positional.empty() && !args.positional[0].is_none()) {
    if (!args.positional[0].is_string()) {
      throw_type_error(fmt::format("{} arg must be None or str", name));
    }
    chars = unicode::decode(args.positional[0].str());
    set = &chars;
  }
  const Text text(s);
  size_t begin = 0, end = text.size();
  if (left) {
    while (begin < end && in_set(text.at(begin), set)) ++begin;
  }
  if (right) {
    while (end > begin && in_set(text.at(end - 1), set)) --end;
  }
  return text.slice(begin, end);
}

// str.split / str.rsplit.
Value split(const std::string& s, const Args& args, bool reverse) {
  const std::string name = reverse ? "rsplit" : "split";
  Value sep = Value::none();
  int64_t maxsplit = -1;
  if (args.positional.size() > 2) {
    throw_type_error(
        fmt::format("{}() takes at most 2 arguments ({} given)", name, args.positional.size()));
  }
  if (!args.positional.empty()) sep = args.positional[0];
  if (args.positional.size() > 1) maxsplit = int_arg(args.positional[1]);
  for (const auto& [key, value] : args.keyword) {
    if (key == "sep") {
      sep = value;
    } else if (key == "maxsplit") {
      maxsplit = int_arg(value);
    } else {
      throw_type_error(fmt::format("{}() got an unexpected keyword argument '{}'", name, key));
    }
  }
  if (maxsplit < 0) maxsplit = std::numeric_limits<int64_t>::max();
  const Text text(s);
  std::vector<Value> parts;
  if (sep.is_none()) {
    // Runs of whitespace separate; leading and trailing whitespace gives no empty parts (but
    // the part left after maxsplit splits keeps its own, as in Python).
    std::vector<std::pair<size_t, size_t>> words;
    if (!reverse) {
      size_t i = 0;
      const size_t n = text.size();
      while (true) {
        while (i < n && unicode::is_space(text.at(i))) ++i;
        if (i >= n) break;
        if (static_cast<int64_t>(words.size()) == maxsplit) {
          words.emplace_back(i, n);  // the rest as it is, trailing whitespace included
          break;
        }
        size_t j = i;
        while (j < n && !unicode::is_space(text.at(j))) ++j;
        words.emplace_back(i, j);
        i = j;
      }
    } else {
      size_t i = text.size();
      while (true) {
        while (i > 0 && unicode::is_space(text.at(i - 1))) --i;
        if (i == 0) break;
        if (static_cast<int64_t>(words.size()) == maxsplit) {
          words.emplace_back(0, i);  // the rest as it is, leading whitespace included
          break;
        }
        size_t j = i;
        while (j > 0 && !unicode::is_space(text.at(j - 1))) --j;
        words.emplace_back(j, i);
        i = j;
      }
      std::reverse(words.begin(), words.end());
    }
    for (const auto& [begin, end] : words) parts.push_back(Value::string(text.slice(begin, end)));
    return Value::list(std::move(parts));
  }
  const std::string& separator = string_arg(name, sep);
  if (separator.empty()) throw TemplateError("ValueError", "empty separator");
  const Text sep_text(separator);
  std::vector<std::pair<size_t, size_t>> pieces;
  if (!reverse) {
    size_t begin = 0;
    while (static_cast<int64_t>(pieces.size()) < maxsplit) {
      const size_t at = text.find(sep_text, begin, text.size(), false);
      if (at == std::string::npos) break;
      pieces.emplace_back(begin, at);
      begin = at + sep_text.size();
    }
    pieces.emplace_back(begin, text.size());
  } else {
    size_t end = text.size();
    while (static_cast<int64_t>(pieces.size()) < maxsplit) {
      const size_t at = text.find(sep_text, 0, end, true);
      if (at == std::string::npos) break;
      pieces.emplace_back(at + sep_text.size(), end);
      end = at;
    }
    pieces.emplace_back(0, end);
    std::reverse(pieces.begin(), pieces.end());
  }
  charge(pieces.size());
  for (const auto& [begin, end] : pieces) parts.push_back(Value::string(text.slice(begin, end)));
  return Value::list(std::move(parts));
}

Value splitlines(const std::string& s, const Args& args) {
  bool keepends = false;
  if (args.positional.size() > 1) throw_type_error("splitlines() takes at most 1 argument");
  if (!args.positional.empty()) keepends = truthy(args.positional[0]);
  for (const auto& [key, value] : args.keyword) {
    if (key != "keepends") {
      throw_type_error(fmt::format("splitlines() got an unexpected keyword argument '{}'", key));
    }
    keepends = truthy(value);
  }
  const Text text(s);
  std::vector<Value> lines;
  size_t begin = 0, i = 0;
  const size_t n = text.size();
  while (i < n) {
    if (!unicode::is_line_break(text.at(i))) {
      ++i;
      continue;
    }
    size_t end_of_break = i + 1;
    if (text.at(i) == '\r' && i + 1 < n && text.at(i + 1) == '\n') end_of_break = i + 2;
    lines.push_back(Value::string(text.slice(begin, keepends ? end_of_break : i)));
    begin = i = end_of_break;
  }
  if (begin < n) lines.push_back(Value::string(text.slice(begin, n)));
  return Value::list(std::move(lines));
}

Value starts_or_ends(const std::string& s, const Args& args, bool ends) {
  const std::string name = ends ? "endswith" : "startswith";
  expect_count(name, args, 1, 3);
  const Text text(s);
  auto [begin, end] = range_args(args, 1, text.size());
  if (!args.positional[0].is_string() && !args.positional[0].is_tuple()) {
    throw_type_error(fmt::format("{} first arg must be str or a tuple of str, not {}", name,
                                 args.positional[0].type_name()));
  }
  std::vector<Value> candidates = args.positional[0].is_tuple()
                                      ? args.positional[0].items()
                                      : std::vector<Value>{args.positional[0]};
  // Python: a start past the end matches nothing, not even "".
  if (args.positional.size() > 1 && !args.positional[1].is_none() &&
      int_arg(args.positional[1]) > static_cast<int64_t>(text.size())) {
    return Value::boolean(false);
  }
  for (const Value& candidate : candidates) {
    if (!candidate.is_string()) {
      throw_type_error(
          fmt::format("tuple for {} must only contain str, not {}", name, candidate.type_name()));
    }
    const Text sub(candidate.str());
    if (end - begin < sub.size()) continue;
    const size_t at = ends ? end - sub.size() : begin;
    bool match = true;
    for (size_t k = 0; k < sub.size() && match; ++k) match = text.at(at + k) == sub.at(k);
    if (match) return Value::boolean(true);
  }
  return Value::boolean(false);
}

Value find(const std::string& s, const Args& args, const std::string& name, bool reverse,
           bool raise) {
  expect_count(name, args, 1, 3);
  const Text text(s);
  const Text sub(string_arg(name, args.positional[0]));
  auto [begin, end] = range_args(args, 1, text.size());
  if (args.positional.size() > 1 && !args.positional[1].is_none() &&
      int_arg(args.positional[1]) > static_cast<int64_t>(text.size())) {
    begin = text.size() + 1;
  }
  const size_t at = begin > text.size() ? std::string::npos : text.find(sub, begin, end, reverse);
  if (at == std::string::npos) {
    if (raise) throw TemplateError("ValueError", "substring not found");
    return Value::integer(-1);
  }
  return Value::integer(static_cast<int64_t>(at));
}

Value count(const std::string& s, const Args& args) {
  expect_count("count", args, 1, 3);
  const Text text(s);
  const Text sub(string_arg("count", args.positional[0]));
  auto [begin, end] = range_args(args, 1, text.size());
  if (sub.size() == 0) return Value::integer(static_cast<int64_t>(end - begin + 1));
  int64_t n = 0;
  size_t at = begin;
  while ((at = text.find(sub, at, end, false)) != std::string::npos) {
    ++n;
    at += sub.size();
  }
  return Value::integer(n);
}

Value replace(const std::string& s, const Args& args) {
  expect_count("replace", args, 2, 3);
  const std::string& old_text = string_arg("replace", args.positional[0]);
  const std::string& new_text = string_arg("replace", args.positional[1]);
  int64_t limit = args.positional.size() > 2 ? int_arg(args.positional[2]) : -1;
  if (limit < 0) limit = std::numeric_limits<int64_t>::max();
  std::string out;
  int64_t done = 0;
  if (old_text.empty()) {
    const Text text(s);
    for (size_t i = 0; i <= text.size(); ++i) {
      if (done < limit) {
        out += new_text;
        ++done;
      }
      if (i < text.size()) unicode::append(out, text.at(i));
      check_string(out.size());
    }
    return Value::string(std::move(out));
  }
  size_t begin = 0;
  while (done < limit) {
    const size_t at = s.find(old_text, begin);
    if (at == std::string::npos) break;
    out.append(s, begin, at - begin);
    out += new_text;
    check_string(out.size());
    begin = at + old_text.size();
    ++done;
  }
  out.append(s, begin, std::string::npos);
  check_string(out.size());
  charge(s.size() / 64);
  return Value::string(std::move(out));
}

Value join(const std::string& separator, const Args& args) {
  expect_count("join", args, 1, 1);
  const std::vector<Value> items = iterate(args.positional[0]);
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].is_string()) {
      throw_type_error(fmt::format("sequence item {}: expected str instance, {} found", i,
                                   items[i].type_name()));
    }
    if (i > 0) out += separator;
    out += items[i].str();
    check_string(out.size());
  }
  return Value::string(std::move(out));
}

Value justify(const std::string& s, const Args& args, const std::string& name) {
  expect_count(name, args, 1, 2);
  const int64_t width = int_arg(args.positional[0]);
  std::string fill = " ";
  if (args.positional.size() > 1) {
    if (!args.positional[1].is_string() || unicode::length(args.positional[1].str()) != 1) {
      throw_type_error(fmt::format("The fill character must be exactly one character long"));
    }
    fill = args.positional[1].str();
  }
  const auto length = static_cast<int64_t>(unicode::length(s));
  if (width <= length) return Value::string(s);
  const int64_t margin = width - length;
  check_string(s.size() + static_cast<size_t>(margin) * fill.size());
  int64_t left = 0;
  if (name == "rjust") {
    left = margin;
  } else if (name == "center") {
    left = margin / 2 + (margin & width & 1);
  }
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = left; i < margin; ++i) out += fill;
  return Value::string(std::move(out));
}

Value zfill(const std::string& s, const Args& args) {
  expect_count("zfill", args, 1, 1);
  const int64_t width = int_arg(args.positional[0]);
  const auto length = static_cast<int64_t>(unicode::length(s));
  if (width <= length) return Value::string(s);
  check_string(static_cast<size_t>(width));
  const size_t sign = !s.empty() && (s[0] == '+' || s[0] == '-') ? 1 : 0;
  return Value::string(s.substr(0, sign) + std::string(static_cast<size_t>(width - length), '0') +
                       s.substr(sign));
}

Value partition(const std::string& s, const Args& args, bool reverse) {
  const std::string name = reverse ? "rpartition" : "partition";
  expect_count(name, args, 1, 1);
  const std::string& sep = string_arg(name, args.positional[0]);
  if (sep.empty()) throw TemplateError("ValueError", "empty separator");
  const size_t at = reverse ? s.rfind(sep) : s.find(sep);
  if (at == std::string::npos) {
    return reverse ? Value::tuple({Value::string(""), Value::string(""), Value::string(s)})
                   : Value::tuple({Value::string(s), Value::string(""), Value::string("")});
  }
  return Value::tuple({Value::string(s.substr(0, at)), Value::string(sep),
                       Value::string(s.substr(at + sep.size()))});
}

template <typename Predicate>
Value all_chars(const std::string& s, const Args& args, const std::string& name, Predicate pred) {
  expect_count(name, args, 0, 0);
  if (s.empty()) return Value::boolean(false);
  const Text text(s);
  for (size_t i = 0; i < text.size(); ++i) {
    if (!pred(text.at(i))) return Value::boolean(false);
  }
  return Value::boolean(true);
}

// str.islower / str.isupper: no character of the other case (or titlecase), and one of this.
Value has_case(const std::string& s, const Args& args, const std::string& name, bool lower) {
  expect_count(name, args, 0, 0);
  const Text text(s);
  bool cased = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text.at(i);
    if (unicode::is_title(c) || (lower ? unicode::is_upper(c) : unicode::is_lower(c))) {
      return Value::boolean(false);
    }
    if (lower ? unicode::is_lower(c) : unicode::is_upper(c)) cased = true;
  }
  return Value::boolean(cased);
}

Value istitle(const std::string& s, const Args& args) {
  expect_count("istitle", args, 0, 0);
  const Text text(s);
  bool cased = false, previous_cased = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text.at(i);
    if (unicode::is_upper(c) || unicode::is_title(c)) {
      if (previous_cased) return Value::boolean(false);
      previous_cased = cased = true;
    } else if (unicode::is_lower(c)) {
      if (!previous_cased) return Value::boolean(false);
      previous_cased = cased = true;
    } else {
      previous_cased = false;
    }
  }
  return Value::boolean(cased);
}

Value string_method(const std::string& name, const std::string& s, const Args& args) {
  auto no_args = [&](std::string result) {
    expect_count(name, args, 0, 0);
    return Value::string(std::move(result));
  };
  if (name == "strip") return Value::string(strip(s, args, name, true, true));
  if (name == "lstrip") return Value::string(strip(s, args, name, true, false));
  if (name == "rstrip") return Value::string(strip(s, args, name, false, true));
  if (name == "split") return split(s, args, false);
  if (name == "rsplit") return split(s, args, true);
  if (name == "splitlines") return splitlines(s, args);
  if (name == "startswith") return starts_or_ends(s, args, false);
  if (name == "endswith") return starts_or_ends(s, args, true);
  if (name == "find") return find(s, args, name, false, false);
  if (name == "rfind") return find(s, args, name, true, false);
  if (name == "index") return find(s, args, name, false, true);
  if (name == "rindex") return find(s, args, name, true, true);
  if (name == "count") return count(s, args);
  if (name == "replace") return replace(s, args);
  if (name == "join") return join(s, args);
  if (name == "upper") return no_args(unicode::upper(s));
  if (name == "lower") return no_args(unicode::lower(s));
  if (name == "title") return no_args(unicode::title(s));
  if (name == "capitalize") return no_args(unicode::capitalize(s));
  if (name == "swapcase") return no_args(unicode::swapcase(s));
  if (name == "casefold") return no_args(unicode::casefold(s));
  if (name == "center" || name == "ljust" || name == "rjust") return justify(s, args, name);
  if (name == "zfill") return zfill(s, args);
  if (name == "partition") return partition(s, args, false);
  if (name == "rpartition") return partition(s, args, true);
  if (name == "removeprefix" || name == "removesuffix") {
    expect_count(name, args, 1, 1);
    const std::string& affix = string_arg(name, args.positional[0]);
    if (name == "removeprefix") {
      return Value::string(s.compare(0, affix.size(), affix) == 0 ? s.substr(affix.size()) : s);
    }
    const bool ends =
        s.size() >= affix.size() && s.compare(s.size() - affix.size(), affix.size(), affix) == 0;
    return Value::string(ends && !affix.empty() ? s.substr(0, s.size() - affix.size()) : s);
  }
  if (name == "format") return Value::string(str_format(s, args));
  if (name == "format_map") {
    if (!args.keyword.empty()) throw_type_error("format_map() takes no keyword arguments");
    if (args.positional.size() != 1) {
      throw_type_error(fmt::format("format_map() takes exactly one argument ({} given)",
                                   args.positional.size()));
    }
    CallArgs mapped;
    const Value& mapping = args.positional[0];
    if (!mapping.is_dict()) throw_type_error("format_map() argument must be a mapping");
    for (const auto& [key, value] : mapping.dict().entries()) {
      if (key.is_string()) mapped.keyword.emplace_back(key.str(), value);
    }
    return Value::string(str_format(s, mapped));
  }
  if (name == "isalpha") return all_chars(s, args, name, unicode::is_alpha);
  if (name == "isdecimal") return all_chars(s, args, name, unicode::is_decimal);
  if (name == "isdigit") return all_chars(s, args, name, unicode::is_digit);
  if (name == "isnumeric") return all_chars(s, args, name, unicode::is_numeric);
  if (name == "isalnum") return all_chars(s, args, name, unicode::is_alnum);
  if (name == "isspace") return all_chars(s, args, name, unicode::is_space);
  if (name == "isprintable") {
    expect_count(name, args, 0, 0);
    const Text text(s);
    for (size_t i = 0; i < text.size(); ++i) {
      if (!unicode::is_printable(text.at(i))) return Value::boolean(false);
    }
    return Value::boolean(true);
  }
  if (name == "isascii") {
    expect_count(name, args, 0, 0);
    return Value::boolean(unicode::is_ascii(s));
  }
  if (name == "islower") return has_case(s, args, name, true);
  if (name == "isupper") return has_case(s, args, name, false);
  if (name == "istitle") return istitle(s, args);
  throw TemplateError(
      "TemplateError",
      fmt::format("str.{}() is not supported by loraserve's template renderer", name));
}

Value sequence_method(const std::string& name, const Value& self, const Args& args) {
  const auto& items = self.items();
  if (name == "count") {
    expect_count(name, args, 1, 1);
    int64_t n = 0;
    for (const Value& item : items) n += equal(item, args.positional[0]);
    return Value::integer(n);
  }
  if (name == "index") {
    expect_count(name, args, 1, 3);
    auto [begin, end] = range_args(args, 1, items.size());
    for (size_t i = begin; i < end; ++i) {
      if (equal(items[i], args.positional[0])) return Value::integer(static_cast<int64_t>(i));
    }
    throw TemplateError("ValueError", self.is_tuple()
                                          ? "tuple.index(x): x not in tuple"
                                          : repr(args.positional[0]) + " is not in list");
  }
  if (name == "copy") {
    expect_count(name, args, 0, 0);
    return Value::list(items);
  }
  throw TemplateError("TemplateError", fmt::format("{}.{}() is not supported by loraserve's "
                                                   "template renderer",
                                                   self.type_name(), name));
}

Value dict_method(const std::string& name, const Value& self, const Args& args) {
  const Dict& dict = self.dict();
  if (name == "get") {
    expect_count(name, args, 1, 2);
    const Value* found = dict.find(args.positional[0]);
    if (found != nullptr) return *found;
    return args.positional.size() > 1 ? args.positional[1] : Value::none();
  }
  std::vector<Value> out;
  out.reserve(dict.size());
  if (name == "keys" || name == "values" || name == "items") {
    expect_count(name, args, 0, 0);
    for (const auto& [key, value] : dict.entries()) {
      if (name == "keys") {
        out.push_back(key);
      } else if (name == "values") {
        out.push_back(value);
      } else {
        out.push_back(Value::tuple({key, value}));
      }
    }
    const SequenceView view = name == "keys"     ? SequenceView::kDictKeys
                              : name == "values" ? SequenceView::kDictValues
                                                 : SequenceView::kDictItems;
    return Value::list(std::move(out), view);
  }
  if (name == "copy") {
    expect_count(name, args, 0, 0);
    return self;
  }
  throw TemplateError(
      "TemplateError",
      fmt::format("dict.{}() is not supported by loraserve's template renderer", name));
}

// A method bound to its receiver, as `text.strip` evaluates to in Python.
class BoundMethod : public Object {
 public:
  BoundMethod(Value receiver, std::string name)
      : receiver_(std::move(receiver)), name_(std::move(name)) {}
  std::string type_name() const override { return "builtin_function_or_method"; }
  bool callable() const override { return true; }
  Value call(Interpreter&, CallArgs args) override { return call_method(receiver_, name_, args); }
  std::string repr() const override {
    return fmt::format("<built-in method {} of {} object>", name_, receiver_.type_name());
  }

 private:
  Value receiver_;
  std::string name_;
};

constexpr std::string_view kStringMethods[] = {
    "capitalize",   "casefold",    "center",    "count",      "encode",       "endswith",
    "expandtabs",   "find",        "format",    "format_map", "index",        "isalnum",
    "isalpha",      "isascii",     "isdecimal", "isdigit",    "isidentifier", "islower",
    "isnumeric",    "isprintable", "isspace",   "istitle",    "isupper",      "join",
    "ljust",        "lower",       "lstrip",    "maketrans",  "partition",    "removeprefix",
    "removesuffix", "replace",     "rfind",     "rindex",     "rjust",        "rpartition",
    "rsplit",       "rstrip",      "split",     "splitlines", "startswith",   "strip",
    "swapcase",     "title",       "translate", "upper",      "zfill"};
constexpr std::string_view kListMethods[] = {"copy", "count", "index"};
constexpr std::string_view kListMutators[] = {"append", "clear",  "extend",  "insert",
                                              "pop",    "remove", "reverse", "sort"};
constexpr std::string_view kTupleMethods[] = {"count", "index"};
constexpr std::string_view kDictMethods[] = {"copy", "fromkeys", "get", "items", "keys", "values"};
constexpr std::string_view kDictMutators[] = {"clear", "pop", "popitem", "setdefault", "update"};

template <size_t N>
bool listed(const std::string_view (&names)[N], const std::string& name) {
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

Value unsafe(const Value& receiver, const std::string& name) {
  return Value::undefined(
      fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, receiver.type_name()),
      "SecurityError");
}

}  // namespace

std::optional<Value> method(const Value& receiver, const std::string& name) {
  bool found = false;
  switch (receiver.kind()) {
    case Value::Kind::kString:
      found = listed(kStringMethods, name);
      break;
    case Value::Kind::kList:
      if (receiver.view() != SequenceView::kPlain) {
        found = false;
        break;
      }
      if (listed(kListMutators, name)) return unsafe(receiver, name);
      found = listed(kListMethods, name);
      break;
    case Value::Kind::kTuple:
      found = listed(kTupleMethods, name);
      break;
    case Value::Kind::kDict:
      if (listed(kDictMutators, name)) return unsafe(receiver, name);
      found = listed(kDictMethods, name);
      break;
    default:
      break;
  }
  if (!found) return std::nullopt;
  return Value::object(std::make_shared<BoundMethod>(receiver, name));
}

Value call_method(const Value& receiver, const std::string& name, const CallArgs& args) {
  charge(1);
  if (receiver.is_string()) return string_method(name, receiver.str(), args);
  if (receiver.is_dict()) return dict_method(name, receiver, args);
  return sequence_method(name, receiver, args);
}

}  // namespace loraserve::chat::jinja::py
