// Jinja2's built-in filters (jinja2/filters.py) with transformers' tojson, on template values.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include "chat/jinja_builtins.h"
#include "chat/jinja_interpreter.h"
#include "chat/jinja_methods.h"
#include "chat/py_format.h"
#include "chat/py_ops.h"
#include "chat/unicode_text.h"

namespace loraserve::chat::jinja {
namespace {

// One parameter of a filter's Python signature.
struct Param {
  const char* name;
  std::optional<Value> fallback;  // nullopt: required
};

// Binds a call's arguments to a Python signature (after the filtered value): positional in
// order, then keywords; TypeError for too many, unknown, duplicate or missing arguments.
std::vector<Value> bind(const char* filter, const CallArgs& args, std::vector<Param> params) {
  std::vector<std::optional<Value>> bound(params.size());
  if (args.positional.size() > params.size()) {
    throw_type_error(fmt::format("{}() takes {} positional argument{} but {} were given", filter,
                                 params.size() + 1, params.empty() ? "" : "s",
                                 args.positional.size() + 1));
  }
  for (size_t i = 0; i < args.positional.size(); ++i) bound[i] = args.positional[i];
  for (const auto& keyword : args.keyword) {
    const auto& key = keyword.first;
    const auto& value = keyword.second;
    auto it =
        std::find_if(params.begin(), params.end(), [&](const Param& p) { return key == p.name; });
    if (it == params.end()) {
      throw_type_error(fmt::format("{}() got an unexpected keyword argument '{}'", filter, key));
    }
    auto& slot = bound[static_cast<size_t>(it - params.begin())];
    if (slot) {
      throw_type_error(fmt::format("{}() got multiple values for argument '{}'", filter, key));
    }
    slot = value;
  }
  std::vector<Value> out;
  out.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    if (!bound[i]) {
      if (!params[i].fallback) {
        throw_type_error(fmt::format("{}() missing 1 required positional argument: '{}'", filter,
                                     params[i].name));
      }
      bound[i] = params[i].fallback;
    }
    out.push_back(*std::move(bound[i]));
  }
  return out;
}

void no_arguments(const char* filter, const CallArgs& args) { bind(filter, args, {}); }

int64_t int_value(const Value& v, const char* what) {
  if (!v.is_int_like()) {
    throw_type_error(
        fmt::format("'{}' object cannot be interpreted as an integer ({})", v.type_name(), what));
  }
  return v.as_int();
}

// Jinja's soft_str: str() of anything that is not a string already.
std::string soft_str(const Value& v) { return py::to_str(v); }

// Lower-cases strings, for the case-insensitive comparisons of sort, unique, min, max.
Value ignore_case(const Value& v) {
  return v.is_string() ? Value::string(unicode::lower(v.str())) : v;
}

// Jinja's make_attrgetter: "a.b.0" looked up part by part with item-first lookups.
class AttributeGetter {
 public:
  explicit AttributeGetter(const Value& attribute, std::optional<Value> fallback = std::nullopt)
      : fallback_(std::move(fallback)) {
    if (attribute.is_none()) return;
    if (!attribute.is_string()) {
      parts_.push_back(attribute);
      return;
    }
    const std::string& text = attribute.str();
    size_t begin = 0;
    while (true) {
      const size_t dot = text.find('.', begin);
      const std::string part = text.substr(begin, dot == std::string::npos ? dot : dot - begin);
      const bool digits =
          !part.empty() && part.size() < 19 &&
          std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
      parts_.push_back(digits ? Value::integer(std::stoll(part)) : Value::string(part));
      if (dot == std::string::npos) break;
      begin = dot + 1;
    }
  }
  Value operator()(Value item) const {
    for (const Value& part : parts_) {
      item = py::getitem(item, part);
      if (fallback_ && item.is_undefined()) item = *fallback_;
    }
    return item;
  }

 private:
  std::vector<Value> parts_;
  std::optional<Value> fallback_;
};

// "age,name" → one getter per attribute, compared as a list.
std::vector<AttributeGetter> multi_getter(const Value& attribute) {
  std::vector<AttributeGetter> getters;
  if (attribute.is_string()) {
    const std::string& text = attribute.str();
    size_t begin = 0;
    while (true) {
      const size_t comma = text.find(',', begin);
      getters.emplace_back(
          Value::string(text.substr(begin, comma == std::string::npos ? comma : comma - begin)));
      if (comma == std::string::npos) break;
      begin = comma + 1;
    }
  } else {
    getters.emplace_back(attribute);
  }
  return getters;
}

std::string html_escape(const Value& v) {
  const std::string s = soft_str(v);
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '\'':
        out += "&#39;";
        break;
      case '"':
        out += "&#34;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

Value f_abs(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("abs", args);
  if (v.is_int_like()) {
    if (v.as_int() == std::numeric_limits<int64_t>::min()) {
      throw TemplateError("OverflowError", "integer result does not fit in 64 bits");
    }
    return Value::integer(std::llabs(v.as_int()));
  }
  if (v.kind() == Value::Kind::kFloat) return Value::number(std::fabs(v.as_double()));
  throw_type_error(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
}

Value f_attr(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("attr", args, {{"name", std::nullopt}});
  if (!a[0].is_string()) throw_type_error("attribute name must be string");
  if (std::optional<Value> found = py::attribute(v, a[0].str())) return *found;
  return Value::undefined(fmt::format("{} has no attribute {}",
                                      py::string_repr(py::object_type_repr(v)),
                                      py::string_repr(a[0].str())));
}

Value f_batch(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("batch", args, {{"linecount", std::nullopt}, {"fill_with", Value::none()}});
  const int64_t count = int_value(a[0], "linecount");
  std::vector<Value> batches;
  std::vector<Value> current;
  for (Value& item : py::iterate(v)) {
    py::charge(1);
    if (static_cast<int64_t>(current.size()) == count) {
      batches.push_back(Value::list(std::move(current)));
      current.clear();
    }
    current.push_back(std::move(item));
  }
  if (!current.empty()) {
    if (!a[1].is_none()) {
      while (static_cast<int64_t>(current.size()) < count) {
        py::charge(1);
        current.push_back(a[1]);
      }
    }
    batches.push_back(Value::list(std::move(current)));
  }
  return Value::generator(std::move(batches));
}

Value f_capitalize(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("capitalize", args);
  return Value::string(unicode::capitalize(soft_str(v)));
}

Value f_center(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("center", args, {{"width", Value::integer(80)}});
  const std::string s = soft_str(v);
  const int64_t width = int_value(a[0], "width");
  const auto length = static_cast<int64_t>(unicode::length(s));
  if (width <= length) return Value::string(s);
  const int64_t margin = width - length;
  const int64_t left = margin / 2 + (margin & width & 1);
  py::check_string(s.size() + static_cast<size_t>(margin));
  return Value::string(std::string(static_cast<size_t>(left), ' ') + s +
                       std::string(static_cast<size_t>(margin - left), ' '));
}

Value f_length(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("length", args);
  return Value::integer(py::len(v));
}

Value f_default(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("default", args,
                      {{"default_value", Value::string("")}, {"boolean", Value::boolean(false)}});
  if (v.is_undefined() || (py::truthy(a[1]) && !py::truthy(v))) return a[0];
  return v;
}

Value f_dictsort(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("dictsort", args,
                      {{"case_sensitive", Value::boolean(false)},
                       {"by", Value::string("key")},
                       {"reverse", Value::boolean(false)}});
  size_t position;
  if (a[1].is_string() && a[1].str() == "key") {
    position = 0;
  } else if (a[1].is_string() && a[1].str() == "value") {
    position = 1;
  } else {
    throw TemplateError("FilterArgumentError", "You can only sort by either \"key\" or \"value\"");
  }
  if (v.is_undefined()) py::fail_undefined(v);
  if (!v.is_dict()) {
    throw TemplateError("AttributeError",
                        fmt::format("'{}' object has no attribute 'items'", v.type_name()));
  }
  std::vector<Value> items;
  for (const auto& [key, value] : v.dict().entries()) items.push_back(Value::tuple({key, value}));
  const bool case_sensitive = py::truthy(a[0]);
  const bool reverse = py::truthy(a[2]);
  auto key_of = [&](const Value& item) {
    const Value& k = item.items()[position];
    return case_sensitive ? k : ignore_case(k);
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    py::charge(1);
    return reverse ? py::compare(key_of(y), key_of(x), py::CompareOp::kLess)
                   : py::compare(key_of(x), key_of(y), py::CompareOp::kLess);
  });
  return Value::list(std::move(items));
}

Value f_escape(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("escape", args);
  return Value::string(html_escape(v));
}

Value f_filesizeformat(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("filesizeformat", args, {{"binary", Value::boolean(false)}});
  double bytes;
  if (v.is_number()) {
    bytes = v.as_double();
  } else if (v.is_string()) {
    char* end = nullptr;
    const std::string text = v.str();
    bytes = std::strtod(text.c_str(), &end);
    if (end == text.c_str()) {
      throw TemplateError("ValueError",
                          fmt::format("could not convert string to float: {}", py::repr(v)));
    }
  } else {
    throw_type_error(
        fmt::format("float() argument must be a string or a real number, not '{}'", v.type_name()));
  }
  const bool binary = py::truthy(a[0]);
  const double base = binary ? 1024 : 1000;
  static const char* kDecimal[] = {"kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"};
  static const char* kBinary[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
  if (bytes == 1) return Value::string("1 Byte");
  if (bytes < base) return Value::string(fmt::format("{} Bytes", static_cast<int64_t>(bytes)));
  double unit = base;
  for (int i = 0; i < 8; ++i) {
    unit = std::pow(base, i + 2);
    if (bytes < unit || i == 7) {
      return Value::string(
          fmt::format("{:.1f} {}", base * bytes / unit, binary ? kBinary[i] : kDecimal[i]));
    }
  }
  return Value::string("");
}

Value f_first(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("first", args);
  if (v.is_generator()) {
    GeneratorState& g = v.generator_state();
    if (g.next < g.items.size()) return g.items[g.next++];
    return Value::undefined("No first item, sequence was empty.");
  }
  std::vector<Value> items = py::iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

// What Python's int() and float() parse: every decimal digit of any script as its ASCII digit,
// Unicode whitespace as a space; nullopt where another non-ASCII character makes it invalid.
std::optional<std::string> ascii_number_text(const std::string& text) {
  if (unicode::is_ascii(text)) return text;
  if (!unicode::is_valid_utf8(text)) return std::nullopt;
  std::string out;
  for (const char32_t c : unicode::decode(text)) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (const int digit = unicode::decimal_value(c); digit >= 0) {
      out += static_cast<char>('0' + digit);
    } else if (unicode::is_space(c)) {
      out += ' ';
    } else {
      return std::nullopt;
    }
  }
  return out;
}

// Python's float(str): surrounding whitespace, underscores between digits, inf and nan.
std::optional<double> parse_float(const std::string& original) {
  const std::optional<std::string> ascii = ascii_number_text(original);
  if (!ascii) return std::nullopt;
  const std::string& text = *ascii;
  std::string s;
  size_t begin = 0, end = text.size();
  while (begin < end && unicode::is_space(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && unicode::is_space(static_cast<unsigned char>(text[end - 1]))) --end;
  for (size_t i = begin; i < end; ++i) {
    const char c = text[i];
    if (c == '_') {
      if (i == begin || i + 1 >= end || !std::isdigit(static_cast<unsigned char>(text[i - 1])) ||
          !std::isdigit(static_cast<unsigned char>(text[i + 1]))) {
        return std::nullopt;
      }
      continue;
    }
    s += c;
  }
  if (s.empty()) return std::nullopt;
  std::string lowered = unicode::lower(s);
  const size_t sign = lowered[0] == '+' || lowered[0] == '-' ? 1 : 0;
  const std::string word = lowered.substr(sign);
  if (word == "inf" || word == "infinity" || word == "nan") {
    const double x = word == "nan" ? std::nan("") : HUGE_VAL;
    return lowered[0] == '-' ? -x : x;
  }
  if (word.find_first_not_of("0123456789.e+-") != std::string::npos) return std::nullopt;
  char* parsed_end = nullptr;
  const double value = std::strtod(s.c_str(), &parsed_end);
  if (parsed_end != s.c_str() + s.size()) return std::nullopt;
  return value;
}

// Python's int(str, base): whitespace, sign, underscores, optional 0b/0o/0x prefix.
std::optional<int64_t> parse_int(const std::string& original, int64_t base) {
  const std::optional<std::string> ascii = ascii_number_text(original);
  if (!ascii) return std::nullopt;
  const std::string& text = *ascii;
  size_t begin = 0, end = text.size();
  while (begin < end && unicode::is_space(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && unicode::is_space(static_cast<unsigned char>(text[end - 1]))) --end;
  std::string s = text.substr(begin, end - begin);
  if (s.empty()) return std::nullopt;
  bool negative = false;
  if (s[0] == '+' || s[0] == '-') {
    negative = s[0] == '-';
    s.erase(0, 1);
  }
  if (s.size() > 2 && s[0] == '0') {
    const char p = static_cast<char>(s[1] | 0x20);
    if ((p == 'x' && (base == 16 || base == 0)) || (p == 'o' && (base == 8 || base == 0)) ||
        (p == 'b' && (base == 2 || base == 0))) {
      base = p == 'x' ? 16 : p == 'o' ? 8 : 2;
      s.erase(0, 2);
      if (!s.empty() && s[0] == '_') s.erase(0, 1);
    }
  }
  if (base == 0) base = 10;
  if (base < 2 || base > 36 || s.empty()) return std::nullopt;
  int64_t value = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '_') {
      if (i == 0 || i + 1 == s.size() || s[i + 1] == '_') return std::nullopt;
      continue;
    }
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (std::isalpha(static_cast<unsigned char>(c))) {
      digit = (c | 0x20) - 'a' + 10;
    } else {
      return std::nullopt;
    }
    if (digit >= base) return std::nullopt;
    if (__builtin_mul_overflow(value, base, &value) ||
        __builtin_add_overflow(value, digit, &value)) {
      throw TemplateError("OverflowError", "integer does not fit in 64 bits");
    }
  }
  return negative ? -value : value;
}

std::optional<int64_t> float_to_int(double d) {
  if (std::isnan(d)) throw TemplateError("ValueError", "cannot convert float NaN to integer");
  if (std::isinf(d))
    throw TemplateError("OverflowError", "cannot convert float infinity to integer");
  const double t = std::trunc(d);
  if (std::fabs(t) >= 9.2233720368547758e18) {
    throw TemplateError("OverflowError", "integer does not fit in 64 bits");
  }
  return static_cast<int64_t>(t);
}

Value f_float(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("float", args, {{"default", Value::number(0.0)}});
  if (v.is_undefined()) py::fail_undefined(v);
  if (v.is_number()) return Value::number(v.as_double());
  if (v.is_string()) {
    if (std::optional<double> d = parse_float(v.str())) return Value::number(*d);
  }
  return a[0];
}

Value f_int(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("int", args, {{"default", Value::integer(0)}, {"base", Value::integer(10)}});
  if (v.is_undefined()) py::fail_undefined(v);
  if (v.is_int_like()) return Value::integer(v.as_int());
  if (v.kind() == Value::Kind::kFloat) return Value::integer(*float_to_int(v.as_double()));
  if (v.is_string()) {
    if (!a[1].is_int_like()) return a[0];
    if (std::optional<int64_t> i = parse_int(v.str(), a[1].as_int())) return Value::integer(*i);
    if (std::optional<double> d = parse_float(v.str())) return Value::integer(*float_to_int(*d));
  }
  return a[0];
}

Value f_format(Interpreter&, const Value& v, CallArgs& args) {
  if (!args.positional.empty() && !args.keyword.empty()) {
    throw TemplateError("FilterArgumentError",
                        "can't handle positional and keyword arguments at the same time");
  }
  if (!args.keyword.empty()) {
    auto dict = std::make_shared<Dict>();
    for (auto& [key, value] : args.keyword) dict->set(Value::string(key), value);
    return Value::string(py::percent_format(soft_str(v), Value::dict(std::move(dict))));
  }
  return Value::string(py::percent_format(soft_str(v), Value::tuple(args.positional)));
}

Value f_indent(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("indent", args,
                      {{"width", Value::integer(4)},
                       {"first", Value::boolean(false)},
                       {"blank", Value::boolean(false)}});
  std::string indention;
  if (a[0].is_string()) {
    indention = a[0].str();
  } else {
    const int64_t width = int_value(a[0], "width");
    py::check_string(static_cast<size_t>(std::max<int64_t>(width, 0)));
    indention = std::string(static_cast<size_t>(std::max<int64_t>(width, 0)), ' ');
  }
  // Jinja's indent does `s += "\n"` and then s.splitlines().
  if (v.is_undefined()) py::fail_undefined(v);
  if (v.is_list() && v.view() == SequenceView::kPlain) {
    throw TemplateError("AttributeError", "'list' object has no attribute 'splitlines'");
  }
  if (!v.is_string()) {
    throw_type_error(
        fmt::format("unsupported operand type(s) for +=: '{}' and 'str'", v.type_name()));
  }
  const std::vector<Value> lines =
      py::call_method(Value::string(v.str() + "\n"), "splitlines", {}).items();
  std::string out;
  if (py::truthy(a[2])) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += "\n" + indention;
      out += lines[i].str();
      py::check_string(out.size());
    }
  } else if (!lines.empty()) {
    out = lines[0].str();
    for (size_t i = 1; i < lines.size(); ++i) {
      out += "\n";
      if (!lines[i].str().empty()) out += indention;
      out += lines[i].str();
      py::check_string(out.size());
    }
  }
  if (py::truthy(a[1])) out = indention + out;
  return Value::string(std::move(out));
}

Value f_items(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("items", args);
  if (v.is_undefined()) return Value::generator({});
  if (!v.is_dict()) throw_type_error("Can only get item pairs from a mapping.");
  std::vector<Value> items;
  for (const auto& [key, value] : v.dict().entries()) items.push_back(Value::tuple({key, value}));
  return Value::generator(std::move(items));
}

Value f_join(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("join", args, {{"d", Value::string("")}, {"attribute", Value::none()}});
  std::vector<Value> items = py::iterate(v);
  if (!a[1].is_none()) {
    const AttributeGetter getter(a[1]);
    for (Value& item : items) item = getter(item);
  }
  const std::string separator = soft_str(a[0]);
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += separator;
    py::append_str(out, items[i]);
    py::check_string(out.size());
  }
  return Value::string(std::move(out));
}

Value f_last(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("last", args);
  if (v.is_generator()) throw_type_error("'generator' object is not reversible");
  std::vector<Value> items = py::iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value f_list(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("list", args);
  return Value::list(py::iterate(v));
}

Value f_lower(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("lower", args);
  return Value::string(unicode::lower(soft_str(v)));
}

Value f_upper(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("upper", args);
  return Value::string(unicode::upper(soft_str(v)));
}

Value f_map(Interpreter& interpreter, const Value& v, CallArgs& args) {
  if (!py::truthy(v)) return Value::generator({});
  std::vector<Value> items = py::iterate(v);
  std::vector<Value> out;
  out.reserve(items.size());
  auto attribute = std::find_if(args.keyword.begin(), args.keyword.end(),
                                [](const auto& kw) { return kw.first == "attribute"; });
  if (args.positional.empty() && attribute != args.keyword.end()) {
    std::optional<Value> fallback;
    for (const auto& [key, value] : args.keyword) {
      if (key == "default") {
        fallback = value;
      } else if (key != "attribute") {
        throw TemplateError("FilterArgumentError",
                            fmt::format("Unexpected keyword argument '{}'", key));
      }
    }
    const AttributeGetter getter(attribute->second,
                                 fallback && !fallback->is_none() ? fallback : std::nullopt);
    for (const Value& item : items) out.push_back(getter(item));
    return Value::generator(std::move(out));
  }
  if (args.positional.empty()) {
    throw TemplateError("FilterArgumentError", "map requires a filter argument");
  }
  const std::string name = soft_str(args.positional[0]);
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : items) out.push_back(interpreter.apply_filter(name, item, rest));
  return Value::generator(std::move(out));
}

Value min_or_max(const char* filter, const Value& v, CallArgs& args, bool max) {
  const auto a =
      bind(filter, args, {{"case_sensitive", Value::boolean(false)}, {"attribute", Value::none()}});
  std::vector<Value> items = py::iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const AttributeGetter getter(a[1]);
  const bool case_sensitive = py::truthy(a[0]);
  auto key = [&](const Value& item) {
    Value k = getter(item);
    return case_sensitive ? k : ignore_case(k);
  };
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = key(items[i]);
    if (py::compare(k, best_key, max ? py::CompareOp::kGreater : py::CompareOp::kLess)) {
      best = i;
      best_key = std::move(k);
    }
  }
  return items[best];
}

Value f_max(Interpreter&, const Value& v, CallArgs& args) {
  return min_or_max("max", v, args, true);
}
Value f_min(Interpreter&, const Value& v, CallArgs& args) {
  return min_or_max("min", v, args, false);
}

Value f_replace(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("replace", args,
                      {{"old", std::nullopt}, {"new", std::nullopt}, {"count", Value::none()}});
  CallArgs call;
  call.positional = {Value::string(soft_str(a[0])), Value::string(soft_str(a[1]))};
  call.positional.push_back(a[2].is_none() ? Value::integer(-1) : a[2]);
  return py::call_method(Value::string(soft_str(v)), "replace", call);
}

Value f_reverse(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("reverse", args);
  if (v.is_string()) {
    std::u32string cps = unicode::decode(v.str());
    std::reverse(cps.begin(), cps.end());
    return Value::string(unicode::encode(cps));
  }
  std::vector<Value> items;
  try {
    items = py::iterate(v);
  } catch (const TemplateError& e) {
    if (e.kind() != "TypeError") throw;
    throw TemplateError("FilterArgumentError", "argument must be iterable");
  }
  std::reverse(items.begin(), items.end());
  if (v.is_generator()) return Value::list(std::move(items));
  return Value::generator(std::move(items));
}

// Python's round(x, n): correctly rounded, ties to even on the exact binary value.
double round_half_even(double x, int64_t digits) {
  if (!std::isfinite(x) || digits > 300) return x;
  if (digits < -308) return std::copysign(0.0, x);
  if (digits >= 0) {
    const int n = std::snprintf(nullptr, 0, "%.*f", static_cast<int>(digits), x);
    std::string text(static_cast<size_t>(n), '\0');
    std::snprintf(text.data(), text.size() + 1, "%.*f", static_cast<int>(digits), x);
    return std::strtod(text.c_str(), nullptr);
  }
  const double pow10 = std::pow(10.0, static_cast<double>(-digits));
  const double y = x / pow10;
  double z = std::round(y);
  if (std::fabs(y - std::trunc(y)) == 0.5) z = 2.0 * std::round(y / 2.0);
  return z * pow10;
}

Value f_round(Interpreter&, const Value& v, CallArgs& args) {
  const auto a =
      bind("round", args, {{"precision", Value::integer(0)}, {"method", Value::string("common")}});
  const std::string method = a[1].is_string() ? a[1].str() : "";
  if (method != "common" && method != "ceil" && method != "floor") {
    throw TemplateError("FilterArgumentError", "method must be common, ceil or floor");
  }
  const int64_t precision = int_value(a[0], "precision");
  if (!v.is_number()) {
    throw_type_error(fmt::format("type {} doesn't define __round__ method", v.type_name()));
  }
  if (method == "common") {
    if (v.is_int_like()) {
      if (precision >= 0) return Value::integer(v.as_int());
      const Value rounded = Value::number(round_half_even(v.as_double(), precision));
      return Value::integer(static_cast<int64_t>(rounded.as_double()));
    }
    return Value::number(round_half_even(v.as_double(), precision));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double scaled = v.as_double() * scale;
  const double r = method == "ceil" ? std::ceil(scaled) : std::floor(scaled);
  return Value::number(r / scale);
}

Value select_or_reject(Interpreter& interpreter, const Value& v, CallArgs& args, bool select,
                       bool by_attribute) {
  if (!py::truthy(v)) return Value::generator({});
  std::optional<AttributeGetter> getter;
  size_t offset = 0;
  if (by_attribute) {
    if (args.positional.empty()) {
      throw TemplateError("FilterArgumentError", "Missing parameter for attribute name");
    }
    getter.emplace(args.positional[0]);
    offset = 1;
  }
  std::optional<std::string> test;
  CallArgs test_args;
  if (args.positional.size() > offset) {
    test = soft_str(args.positional[offset]);
    test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(offset + 1),
                                args.positional.end());
    test_args.keyword = args.keyword;
  }
  std::vector<Value> out;
  for (Value& item : py::iterate(v)) {
    py::charge(1);
    const Value subject = getter ? (*getter)(item) : item;
    const bool passes =
        test ? interpreter.apply_test(*test, subject, test_args) : py::truthy(subject);
    if (passes == select) out.push_back(std::move(item));
  }
  return Value::generator(std::move(out));
}

Value f_select(Interpreter& i, const Value& v, CallArgs& args) {
  return select_or_reject(i, v, args, true, false);
}
Value f_reject(Interpreter& i, const Value& v, CallArgs& args) {
  return select_or_reject(i, v, args, false, false);
}
Value f_selectattr(Interpreter& i, const Value& v, CallArgs& args) {
  return select_or_reject(i, v, args, true, true);
}
Value f_rejectattr(Interpreter& i, const Value& v, CallArgs& args) {
  return select_or_reject(i, v, args, false, true);
}

Value f_safe(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("safe", args);
  return Value::string(soft_str(v));
}

Value f_slice(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("slice", args, {{"slices", std::nullopt}, {"fill_with", Value::none()}});
  const std::vector<Value> seq = py::iterate(v);
  const int64_t slices = int_value(a[0], "slices");
  if (slices == 0) throw TemplateError("ZeroDivisionError", "integer division or modulo by zero");
  const auto length = static_cast<int64_t>(seq.size());
  int64_t per_slice = length / slices, with_extra = length % slices;
  if (with_extra < 0) {
    with_extra += slices;
    per_slice -= 1;
  }
  std::vector<Value> out;
  int64_t offset = 0;
  for (int64_t n = 0; n < slices; ++n) {
    py::charge(1);
    const int64_t start = offset + n * per_slice;
    if (n < with_extra) ++offset;
    const int64_t end = offset + (n + 1) * per_slice;
    std::vector<Value> part;
    for (int64_t i = std::max<int64_t>(start, 0); i < std::min(end, length); ++i) {
      part.push_back(seq[static_cast<size_t>(i)]);
    }
    if (!a[1].is_none() && n >= with_extra) part.push_back(a[1]);
    out.push_back(Value::list(std::move(part)));
  }
  return Value::generator(std::move(out));
}

Value f_sort(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("sort", args,
                      {{"reverse", Value::boolean(false)},
                       {"case_sensitive", Value::boolean(false)},
                       {"attribute", Value::none()}});
  std::vector<Value> items = py::iterate(v);
  const bool reverse = py::truthy(a[0]);
  const bool case_sensitive = py::truthy(a[1]);
  const std::vector<AttributeGetter> getters = multi_getter(a[2]);
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items) {
    std::vector<Value> keys;
    for (const AttributeGetter& g : getters) {
      Value k = g(item);
      keys.push_back(case_sensitive ? k : ignore_case(k));
    }
    keyed.emplace_back(Value::list(std::move(keys)), std::move(item));
  }
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    py::charge(1);
    return reverse ? py::compare(y.first, x.first, py::CompareOp::kLess)
                   : py::compare(x.first, y.first, py::CompareOp::kLess);
  });
  std::vector<Value> out;
  out.reserve(keyed.size());
  for (auto& [key, item] : keyed) out.push_back(std::move(item));
  return Value::list(std::move(out));
}

Value f_string(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("string", args);
  return Value::string(soft_str(v));
}

Value f_sum(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("sum", args, {{"attribute", Value::none()}, {"start", Value::integer(0)}});
  if (a[1].is_string()) throw_type_error("sum() can't sum strings [use ''.join(seq) instead]");
  const AttributeGetter getter(a[0]);
  Value total = a[1];
  for (const Value& item : py::iterate(v)) {
    total = py::binary(py::BinaryOp::kAdd, total, a[0].is_none() ? item : getter(item));
  }
  return total;
}

Value f_title(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("title", args);
  // Jinja's title: split at runs of whitespace, '-', '(', '{', '[' and '<'; each piece gets its
  // first character upper-cased and the rest lower-cased.
  const std::u32string cps = unicode::decode(soft_str(v));
  auto is_break = [](char32_t c) {
    return unicode::is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
  };
  std::string out;
  size_t i = 0;
  while (i < cps.size()) {
    size_t j = i;
    const bool breaks = is_break(cps[i]);
    while (j < cps.size() && is_break(cps[j]) == breaks) ++j;
    const std::u32string_view piece(cps.data() + i, j - i);
    out += unicode::upper(unicode::encode(piece.substr(0, 1)));
    out += unicode::lower(unicode::encode(piece.substr(1)));
    i = j;
  }
  return Value::string(std::move(out));
}

Value f_tojson(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("tojson", args,
                      {{"ensure_ascii", Value::boolean(false)},
                       {"indent", Value::none()},
                       {"separators", Value::none()},
                       {"sort_keys", Value::boolean(false)}});
  py::JsonOptions options;
  options.ensure_ascii = py::truthy(a[0]);
  if (a[1].is_string()) {
    options.indent = a[1].str();
  } else if (a[1].is_int_like()) {
    const int64_t width = a[1].as_int();
    py::check_string(static_cast<size_t>(std::max<int64_t>(width, 0)));
    options.indent = std::string(static_cast<size_t>(std::max<int64_t>(width, 0)), ' ');
  } else if (!a[1].is_none()) {
    throw_type_error(
        fmt::format("can't multiply sequence by non-int of type '{}'", a[1].type_name()));
  }
  if (!a[2].is_none()) {
    const std::vector<Value> parts = py::iterate(a[2]);
    if (parts.size() != 2) {
      throw TemplateError("ValueError",
                          fmt::format("separators must be two strings, got {}", parts.size()));
    }
    if (!parts[0].is_string() || !parts[1].is_string()) {
      throw_type_error("separators must be strings");
    }
    options.item_separator = parts[0].str();
    options.key_separator = parts[1].str();
  }
  options.sort_keys = py::truthy(a[3]);
  return Value::string(py::json_dumps(v, options));
}

Value f_trim(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("trim", args, {{"chars", Value::none()}});
  CallArgs call;
  call.positional.push_back(a[0]);
  return py::call_method(Value::string(soft_str(v)), "strip", call);
}

Value f_truncate(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("truncate", args,
                      {{"length", Value::integer(255)},
                       {"killwords", Value::boolean(false)},
                       {"end", Value::string("...")},
                       {"leeway", Value::none()}});
  const int64_t length = int_value(a[0], "length");
  const int64_t leeway = a[3].is_none() ? 5 : int_value(a[3], "leeway");
  const int64_t end_length = py::len(a[2]);
  if (length < end_length) {
    throw TemplateError("AssertionError",
                        fmt::format("expected length >= {}, got {}", end_length, length));
  }
  if (leeway < 0) {
    throw TemplateError("AssertionError", fmt::format("expected leeway >= 0, got {}", leeway));
  }
  if (py::len(v) <= length + leeway) return v;
  if (!v.is_string()) {
    // Jinja slices the value and then adds the end or rsplits it, which only text allows.
    const Value kept =
        py::getslice(v, Value::integer(0), Value::integer(length - end_length), std::nullopt);
    if (py::truthy(a[1])) return py::binary(py::BinaryOp::kAdd, kept, a[2]);
    throw TemplateError("AttributeError",
                        fmt::format("'{}' object has no attribute 'rsplit'", kept.type_name()));
  }
  if (!a[2].is_string()) {
    throw_type_error(fmt::format("can only concatenate str (not \"{}\") to str", a[2].type_name()));
  }
  const std::u32string cps = unicode::decode(v.str());
  if (static_cast<int64_t>(cps.size()) <= length + leeway) return v;
  std::u32string kept = cps.substr(0, static_cast<size_t>(length - end_length));
  if (!py::truthy(a[1])) {
    const size_t space = kept.rfind(U' ');
    if (space != std::u32string::npos) kept = kept.substr(0, space);
  }
  return Value::string(unicode::encode(kept) + a[2].str());
}

Value f_unique(Interpreter&, const Value& v, CallArgs& args) {
  const auto a = bind("unique", args,
                      {{"case_sensitive", Value::boolean(false)}, {"attribute", Value::none()}});
  const AttributeGetter getter(a[1]);
  const bool case_sensitive = py::truthy(a[0]);
  std::vector<Value> seen, out;
  for (Value& item : py::iterate(v)) {
    Value key = getter(item);
    if (!case_sensitive) key = ignore_case(key);
    py::check_hashable(key);
    bool found = false;
    for (const Value& s : seen) {
      if (py::equal(s, key)) {
        found = true;
        break;
      }
    }
    if (!found) {
      seen.push_back(std::move(key));
      out.push_back(std::move(item));
    }
  }
  return Value::generator(std::move(out));
}

Value f_wordcount(Interpreter&, const Value& v, CallArgs& args) {
  no_arguments("wordcount", args);
  int64_t words = 0;
  bool in_word = false;
  for (char32_t c : unicode::decode(soft_str(v))) {
    const bool w = unicode::is_word(c);
    if (w && !in_word) ++words;
    in_word = w;
  }
  return Value::integer(words);
}

struct FilterEntry {
  const char* name;
  FilterFn fn;
};

constexpr FilterEntry kFilters[] = {
    {"abs", f_abs},
    {"attr", f_attr},
    {"batch", f_batch},
    {"capitalize", f_capitalize},
    {"center", f_center},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"dictsort", f_dictsort},
    {"e", f_escape},
    {"escape", f_escape},
    {"filesizeformat", f_filesizeformat},
    {"first", f_first},
    {"float", f_float},
    {"forceescape", f_escape},
    {"format", f_format},
    {"indent", f_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"round", f_round},
    {"safe", f_safe},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"slice", f_slice},
    {"sort", f_sort},
    {"string", f_string},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"truncate", f_truncate},
    {"unique", f_unique},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
};

// Jinja filters loraserve leaves out: their output is HTML, random, or Python's pretty printer.
constexpr const char* kUnsupportedFilters[] = {"groupby",   "pprint", "random",   "striptags",
                                               "urlencode", "urlize", "wordwrap", "xmlattr"};

}  // namespace

FilterFn find_filter(const std::string& name) {
  for (const FilterEntry& entry : kFilters) {
    if (name == entry.name) return entry.fn;
  }
  return nullptr;
}

std::string unknown_filter_message(const std::string& name) {
  for (const char* unsupported : kUnsupportedFilters) {
    if (name == unsupported) {
      return fmt::format("the '{}' filter is not supported by loraserve's template renderer", name);
    }
  }
  return fmt::format("No filter named '{}'.", name);
}

}  // namespace loraserve::chat::jinja
