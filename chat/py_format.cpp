#include "chat/py_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "chat/py_ops.h"
#include "chat/unicode_text.h"
#include "common/excerpt.h"

namespace loraserve::chat::jinja::py {
namespace {

// The flags, width and precision of one conversion (printf style or a format spec).
struct Spec {
  bool left = false;          // '-' / '<'
  bool center = false;        // '^'
  bool sign_aligned = false;  // '=' or the '0' flag: pad between sign and digits
  // format() specs only: what was written, for the checks str and bool make.
  bool align_given = false;  // '<', '>', '^' or '='
  bool sign_given = false;   // '+', '-' or ' '
  bool zero = false;         // the '0' flag with no alignment given: '=' for numbers
  char fill = ' ';
  char sign = '-';         // '-', '+' or ' '
  bool alternate = false;  // '#'
  int64_t width = -1;
  int64_t precision = -1;
  char grouping = 0;  // ',' or '_'
  char type = 0;
};

void pad(std::string& out, std::string body, const Spec& spec, bool numeric) {
  const auto length = static_cast<int64_t>(unicode::length(body));
  if (spec.width <= length) {
    out += body;
    return;
  }
  const auto padding = static_cast<size_t>(spec.width - length);
  check_string(out.size() + body.size() + padding);
  if (spec.left) {
    out += body;
    out.append(padding, spec.fill);
  } else if (spec.center) {
    const size_t before = padding / 2;
    out.append(before, spec.fill);
    out += body;
    out.append(padding - before, spec.fill);
  } else if (spec.sign_aligned && numeric) {
    size_t sign_length = 0;
    if (!body.empty() && (body[0] == '-' || body[0] == '+' || body[0] == ' ')) sign_length = 1;
    if (body.size() >= sign_length + 2 && body[sign_length] == '0' &&
        std::string_view("xXob").find(body[sign_length + 1]) != std::string_view::npos) {
      sign_length += 2;
    }
    out += body.substr(0, sign_length);
    out.append(padding, spec.fill);
    out += body.substr(sign_length);
  } else {
    out.append(padding, spec.fill);
    out += body;
  }
}

std::string group_digits(const std::string& digits, char separator) {
  if (separator == 0) return digits;
  std::string out;
  const size_t n = digits.size();
  for (size_t i = 0; i < n; ++i) {
    if (i > 0 && (n - i) % 3 == 0) out += separator;
    out += digits[i];
  }
  return out;
}

std::string format_integer(int64_t value, const Spec& spec, char type) {
  const bool negative = value < 0;
  const uint64_t magnitude =
      negative ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
  std::string digits;
  std::string prefix;
  switch (type) {
    case 'o':
      digits = fmt::format("{:o}", magnitude);
      if (spec.alternate) prefix = "0o";
      break;
    case 'x':
      digits = fmt::format("{:x}", magnitude);
      if (spec.alternate) prefix = "0x";
      break;
    case 'X':
      digits = fmt::format("{:X}", magnitude);
      if (spec.alternate) prefix = "0X";
      break;
    case 'b':
      digits = fmt::format("{:b}", magnitude);
      if (spec.alternate) prefix = "0b";
      break;
    default:
      digits = group_digits(fmt::format("{}", magnitude), spec.grouping);
      break;
  }
  if (spec.precision >= 0 && static_cast<int64_t>(digits.size()) < spec.precision) {
    digits.insert(0, static_cast<size_t>(spec.precision) - digits.size(), '0');
  }
  std::string sign = negative ? "-" : spec.sign == '-' ? "" : std::string(1, spec.sign);
  return sign + prefix + digits;
}

std::string format_double(double value, const Spec& spec, char type, int64_t default_precision) {
  if (std::isnan(value) || std::isinf(value)) {
    std::string body = std::isnan(value) ? "nan" : "inf";
    if (type == 'E' || type == 'F' || type == 'G') body = std::isnan(value) ? "NAN" : "INF";
    const bool negative = std::signbit(value) && !std::isnan(value);
    return (negative ? "-" : spec.sign == '-' ? "" : std::string(1, spec.sign)) + body;
  }
  const int64_t precision =
      std::min<int64_t>(spec.precision >= 0 ? spec.precision : default_precision, 200);
  std::string flags = spec.alternate ? "#" : "";
  if (spec.sign != '-') flags += spec.sign;
  char c_type = type == '%' ? 'f' : type;
  const double v = type == '%' ? value * 100.0 : value;
  const std::string c_format = fmt::format("%{}.{}{}", flags, precision, c_type);
  const int n = std::snprintf(nullptr, 0, c_format.c_str(), v);
  std::string body(static_cast<size_t>(n), '\0');
  std::snprintf(body.data(), body.size() + 1, c_format.c_str(), v);
  if (spec.grouping != 0 && (c_type == 'f' || c_type == 'F')) {
    size_t start = body[0] == '-' || body[0] == '+' || body[0] == ' ' ? 1 : 0;
    size_t end = body.find('.', start);
    if (end == std::string::npos) end = body.size();
    body = body.substr(0, start) + group_digits(body.substr(start, end - start), spec.grouping) +
           body.substr(end);
  }
  if (type == '%') body += '%';
  return body;
}

[[noreturn]] void format_error(std::string message) {
  throw TemplateError("ValueError", std::move(message));
}

// Python's float.__format__ with no type: str() when no precision, else 'g' that keeps a
// decimal point.
std::string format_float_general(double value, const Spec& spec) {
  if (spec.precision < 0) {
    std::string body = float_repr(value);
    if (spec.sign != '-' && !std::signbit(value)) body.insert(0, 1, spec.sign);
    return body;
  }
  Spec g = spec;
  g.alternate = false;
  std::string body = format_double(value, g, 'g', 6);
  if (std::isfinite(value) && body.find_first_of(".e") == std::string::npos) body += ".0";
  return body;
}

}  // namespace

std::string percent_format(const std::string& format, const Value& args) {
  std::vector<Value> positional;
  const bool is_tuple = args.is_tuple();
  if (is_tuple) {
    positional = args.items();
  } else {
    positional.push_back(args);
  }
  // Python treats any non-tuple, non-str object with __getitem__ as the mapping for %(name)s.
  const bool mapping = !is_tuple && (args.is_dict() || args.is_list() || args.is_undefined());
  size_t next = 0;
  auto next_arg = [&]() -> const Value& {
    if (next >= positional.size()) throw_type_error("not enough arguments for format string");
    return positional[next++];
  };
  std::string out;
  size_t i = 0;
  const size_t n = format.size();
  while (i < n) {
    const size_t percent = format.find('%', i);
    if (percent == std::string::npos) {
      out.append(format, i, std::string::npos);
      break;
    }
    out.append(format, i, percent - i);
    i = percent + 1;
    if (i >= n) format_error("incomplete format");
    std::optional<Value> keyed;
    if (format[i] == '(') {
      if (!mapping) throw_type_error("format requires a mapping");
      int depth = 1;
      size_t j = i + 1;
      while (j < n && depth > 0) {
        if (format[j] == '(') ++depth;
        if (format[j] == ')') --depth;
        ++j;
      }
      if (depth > 0) format_error("incomplete format key");
      const Value key = Value::string(format.substr(i + 1, j - i - 2));
      const Value found = getitem(args, key);
      if (found.is_undefined()) throw TemplateError("KeyError", repr(key));
      keyed = found;
      i = j;
    }
    Spec spec;
    for (; i < n; ++i) {
      const char f = format[i];
      if (f == '-') {
        spec.left = true;
      } else if (f == '+') {
        spec.sign = '+';
      } else if (f == ' ') {
        if (spec.sign != '+') spec.sign = ' ';
      } else if (f == '#') {
        spec.alternate = true;
      } else if (f == '0') {
        spec.sign_aligned = true;
      } else {
        break;
      }
    }
    auto read_number = [&](int64_t* target) {
      if (i < n && format[i] == '*') {
        const Value& v = next_arg();
        if (!v.is_int_like()) throw_type_error("* wants int");
        *target = v.as_int();
        ++i;
        return;
      }
      if (i < n && std::isdigit(static_cast<unsigned char>(format[i]))) {
        int64_t value = 0;
        while (i < n && std::isdigit(static_cast<unsigned char>(format[i]))) {
          value = value * 10 + (format[i] - '0');
          if (value > 1000000) format_error("width too big");
          ++i;
        }
        *target = value;
      }
    };
    read_number(&spec.width);
    if (spec.width < 0 && spec.width != -1) {
      spec.left = true;
      spec.width = -spec.width;
    }
    if (i < n && format[i] == '.') {
      ++i;
      spec.precision = 0;
      read_number(&spec.precision);
    }
    while (i < n && (format[i] == 'h' || format[i] == 'l' || format[i] == 'L')) ++i;
    if (i >= n) format_error("incomplete format");
    const char type = format[i++];
    if (type == '%') {
      out += '%';
      continue;
    }
    if (spec.left) spec.sign_aligned = false;
    if (spec.sign_aligned) spec.fill = '0';
    const Value& arg = keyed ? *keyed : next_arg();
    // int(), float() and the like of an Undefined raise its error; str() and repr() do not.
    if (arg.is_undefined() && type != 's' && type != 'r' && type != 'a') fail_undefined(arg);
    switch (type) {
      case 's':
      case 'r':
      case 'a': {
        std::string body = type == 's' ? to_str(arg) : repr(arg);
        if (spec.precision >= 0) {
          body = body.substr(0, unicode::offset_of(body, static_cast<size_t>(spec.precision)));
        }
        Spec text = spec;
        text.fill = ' ';
        pad(out, std::move(body), text, false);
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'o':
      case 'x':
      case 'X': {
        int64_t value;
        if (arg.is_int_like()) {
          value = arg.as_int();
        } else if (arg.kind() == Value::Kind::kFloat &&
                   (type == 'd' || type == 'i' || type == 'u')) {
          const double d = std::trunc(arg.as_double());
          if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) {
            throw TemplateError("OverflowError", "cannot convert float to a 64-bit integer");
          }
          value = static_cast<int64_t>(d);
        } else {
          throw_type_error(fmt::format(
              "%{} format: {} is required, not {}", type,
              type == 'd' || type == 'i' || type == 'u' ? "a real number" : "an integer",
              arg.type_name()));
        }
        pad(out, format_integer(value, spec, type == 'i' || type == 'u' ? 'd' : type), spec, true);
        break;
      }
      case 'e':
      case 'E':
      case 'f':
      case 'F':
      case 'g':
      case 'G': {
        if (!arg.is_number()) {
          throw_type_error(fmt::format("must be real number, not {}", arg.type_name()));
        }
        pad(out, format_double(arg.as_double(), spec, type, 6), spec, true);
        break;
      }
      case 'c': {
        std::string body;
        if (arg.is_int_like()) {
          const int64_t c = arg.as_int();
          if (c < 0 || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
            throw TemplateError("OverflowError", "%c arg not in range(0x110000)");
          }
          unicode::append(body, static_cast<char32_t>(c));
        } else if (arg.is_string() && unicode::length(arg.str()) == 1) {
          body = arg.str();
        } else {
          throw_type_error("%c requires int or char");
        }
        pad(out, std::move(body), spec, false);
        break;
      }
      default:
        format_error(fmt::format("unsupported format character '{}' (0x{:x}) at index {}", type,
                                 static_cast<unsigned char>(type), i - 1));
    }
    check_string(out.size());
  }
  if (next < positional.size() && !mapping) {
    throw_type_error("not all arguments converted during string formatting");
  }
  return out;
}

namespace {

Spec parse_format_spec(const std::string& text) {
  Spec spec;
  size_t i = 0;
  const size_t n = text.size();
  auto is_align = [](char c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  auto set_align = [&spec](char c) {
    spec.left = c == '<';
    spec.center = c == '^';
    spec.sign_aligned = c == '=';
  };
  bool fill_given = false;
  if (n >= 2 && is_align(text[1]) && static_cast<unsigned char>(text[0]) < 0x80) {
    spec.fill = text[0];
    fill_given = true;
    set_align(text[1]);
    spec.align_given = true;
    i = 2;
  } else if (n >= 1 && is_align(text[0])) {
    set_align(text[0]);
    spec.align_given = true;
    i = 1;
  }
  if (i < n && (text[i] == '+' || text[i] == '-' || text[i] == ' ')) {
    spec.sign = text[i++];
    spec.sign_given = true;
  }
  if (i < n && text[i] == '#') {
    spec.alternate = true;
    ++i;
  }
  // The '0' flag fills with '0' unless a fill was given, and aligns numbers after their sign
  // unless an alignment was given (Python 3.10 on: '{:05}' left-aligns a str, '{:^05}' centers).
  if (i < n && text[i] == '0') {
    if (!fill_given) spec.fill = '0';
    spec.zero = !spec.align_given;
    ++i;
  }
  int64_t width = -1;
  while (i < n && std::isdigit(static_cast<unsigned char>(text[i]))) {
    width = (width < 0 ? 0 : width) * 10 + (text[i++] - '0');
    if (width > 1000000) format_error("Too many decimal digits in format string");
  }
  spec.width = width;
  if (i < n && (text[i] == ',' || text[i] == '_')) spec.grouping = text[i++];
  if (i < n && text[i] == '.') {
    ++i;
    int64_t precision = 0;
    if (i >= n || !std::isdigit(static_cast<unsigned char>(text[i]))) {
      format_error("Format specifier missing precision");
    }
    while (i < n && std::isdigit(static_cast<unsigned char>(text[i]))) {
      precision = precision * 10 + (text[i++] - '0');
      if (precision > 1000000) format_error("Too many decimal digits in format string");
    }
    spec.precision = precision;
  }
  if (i < n) spec.type = text[i++];
  if (i != n) format_error("Invalid format specifier");
  return spec;
}

// format(value, spec) as Python's __format__ methods: int and bool (as an int once the spec is
// not empty), float, str; every other value (None, Undefined, containers) takes str(value) with
// an empty spec and raises TypeError with any other, as object.__format__ does.
std::string format_value(const Value& value, const std::string& spec_text) {
  const Spec spec = parse_format_spec(spec_text);
  Spec number = spec;
  number.sign_aligned = spec.sign_aligned || spec.zero;
  std::string out;
  if (value.is_int_like() && !(value.is_bool() && spec_text.empty())) {
    const char type = spec.type == 0 ? 'd' : spec.type;
    if (std::string_view("eEfFgG%").find(type) != std::string_view::npos) {
      pad(out, format_double(value.as_double(), number, type, 6), number, true);
    } else if (type == 'c') {
      const int64_t c = value.as_int();
      // A surrogate would be a lone one in Python, which UTF-8 cannot hold: refused as %c is.
      if (c < 0 || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
        throw TemplateError("OverflowError", "%c arg not in range(0x110000)");
      }
      std::string body;
      unicode::append(body, static_cast<char32_t>(c));
      pad(out, std::move(body), number, false);
    } else if (std::string_view("dnbxXo").find(type) != std::string_view::npos) {
      if (spec.precision >= 0) format_error("Precision not allowed in integer format specifier");
      pad(out, format_integer(value.as_int(), number, type == 'n' ? 'd' : type), number, true);
    } else {
      format_error(
          fmt::format("Unknown format code '{}' for object of type '{}'", type, value.type_name()));
    }
    return out;
  }
  if (value.kind() == Value::Kind::kFloat) {
    if (spec.type == 0) {
      pad(out, format_float_general(value.as_double(), number), number, true);
    } else if (std::string_view("eEfFgGn%").find(spec.type) != std::string_view::npos) {
      if (spec.type == 'n' && spec.grouping != 0) {
        format_error(fmt::format("Cannot specify '{}' with 'n'.", spec.grouping));
      }
      const char type = spec.type == 'n' ? 'g' : spec.type;  // 'n' is 'g' in the C locale
      pad(out, format_double(value.as_double(), number, type, 6), number, true);
    } else {
      format_error(fmt::format("Unknown format code '{}' for object of type 'float'", spec.type));
    }
    return out;
  }
  if (!value.is_string()) {
    if (!spec_text.empty()) {
      throw_type_error(
          fmt::format("unsupported format string passed to {}.__format__", value.type_name()));
    }
    return to_str(value);
  }
  if (spec.type != 0 && spec.type != 's') {
    format_error(fmt::format("Unknown format code '{}' for object of type 'str'", spec.type));
  }
  if (spec.grouping != 0) format_error(fmt::format("Cannot specify '{}' with 's'.", spec.grouping));
  if (spec.sign_given) format_error("Sign not allowed in string format specifier");
  if (spec.alternate) format_error("Alternate form (#) not allowed in string format specifier");
  if (spec.sign_aligned) format_error("'=' alignment not allowed in string format specifier");
  std::string body = value.str();
  if (spec.precision >= 0) {
    body = body.substr(0, unicode::offset_of(body, static_cast<size_t>(spec.precision)));
  }
  Spec text = spec;
  if (!spec.align_given) text.left = true;  // a str aligns left unless told otherwise
  pad(out, std::move(body), text, false);
  return out;
}

// string.Formatter's auto_arg_index: the next automatic index, or manual numbering (False),
// shared by a format string and the nested fields of its specs.
struct Numbering {
  int64_t auto_index = 0;
  bool manual = false;
};

// string.Formatter._vformat: `levels` is how many more levels of nested specs may follow.
std::string format_fields(const std::string& format, const CallArgs& args, Numbering& numbering,
                          int levels) {
  if (levels < 0) format_error("Max string recursion exceeded");
  std::string out;
  size_t i = 0;
  const size_t n = format.size();
  while (i < n) {
    const char c = format[i];
    if (c == '}') {
      if (i + 1 < n && format[i + 1] == '}') {
        out += '}';
        i += 2;
        continue;
      }
      format_error("Single '}' encountered in format string");
    }
    if (c != '{') {
      out += c;
      ++i;
      continue;
    }
    if (i + 1 < n && format[i + 1] == '{') {
      out += '{';
      i += 2;
      continue;
    }
    // A replacement field: {field_name!conversion:format_spec}, the spec may hold {nested}.
    size_t j = i + 1;
    int depth = 1;
    while (j < n && depth > 0) {
      if (format[j] == '{') ++depth;
      if (format[j] == '}') --depth;
      if (depth > 0) ++j;
    }
    if (j >= n) format_error("expected '}' before end of string");
    const std::string field = format.substr(i + 1, j - i - 1);
    i = j + 1;
    size_t name_end = field.find_first_of("!:");
    std::string name = field.substr(0, name_end);
    char conversion = 0;
    std::string spec;
    if (name_end != std::string::npos) {
      size_t spec_start = name_end;
      if (field[name_end] == '!') {
        if (name_end + 1 >= field.size())
          format_error("end of string while looking for conversion specifier");
        conversion = field[name_end + 1];
        spec_start = name_end + 2;
        if (spec_start < field.size() && field[spec_start] != ':') {
          format_error("expected ':' after conversion specifier");
        }
      }
      if (spec_start < field.size()) spec = field.substr(spec_start + 1);
    }
    // The first part of the name picks the argument; .attr and [key] parts walk into it. As
    // string.Formatter (the sandbox's str.format): only a name that is all digits counts as
    // manual numbering ('{0[1]}' after '{}' is allowed), and an empty first part before .attr
    // or [key] is the keyword ''.
    size_t first_end = name.find_first_of(".[");
    const std::string first = name.substr(0, first_end);
    auto all_digits = [](const std::string& text) {
      return !text.empty() && std::all_of(text.begin(), text.end(), [](char ch) {
        return std::isdigit(static_cast<unsigned char>(ch));
      });
    };
    Value value;
    if (name.empty()) {
      if (numbering.manual) {
        format_error("cannot switch from manual field specification to automatic field numbering");
      }
      const auto index = static_cast<size_t>(numbering.auto_index++);
      if (index >= args.positional.size()) {
        throw TemplateError("IndexError",
                            fmt::format("Replacement index {} out of range for positional args "
                                        "tuple",
                                        index));
      }
      value = args.positional[index];
    } else if (all_digits(first)) {
      if (all_digits(name)) {
        if (numbering.auto_index > 0) {
          format_error(
              "cannot switch from automatic field numbering to manual field specification");
        }
        numbering.manual = true;
      }
      const size_t index =
          first.size() > 9 ? std::numeric_limits<size_t>::max() : std::stoul(first);
      if (index >= args.positional.size()) {
        throw TemplateError("IndexError",
                            fmt::format("Replacement index {} out of range for positional args "
                                        "tuple",
                                        first));
      }
      value = args.positional[index];
    } else {
      auto it = std::find_if(args.keyword.begin(), args.keyword.end(),
                             [&](const auto& kw) { return kw.first == first; });
      if (it == args.keyword.end()) throw TemplateError("KeyError", string_repr(first));
      value = it->second;
    }
    size_t k = first_end;
    while (k != std::string::npos && k < name.size()) {
      if (name[k] == '.') {
        const size_t end = name.find_first_of(".[", k + 1);
        value = getattr(
            value, name.substr(k + 1, end == std::string::npos ? std::string::npos : end - k - 1));
        k = end;
      } else {
        const size_t end = name.find(']', k);
        if (end == std::string::npos) format_error("Missing ']' in format string");
        const std::string key = name.substr(k + 1, end - k - 1);
        const bool numeric = key.size() < 10 && all_digits(key);
        value = getitem(value, numeric ? Value::integer(std::stoll(key)) : Value::string(key));
        k = end + 1;
      }
    }
    // An Undefined (a missing argument's attribute or item) formats as object.__format__ does:
    // '' with an empty spec, TypeError with another (format_value).
    if (conversion == 'r' || conversion == 'a') {
      value = Value::string(repr(value));
    } else if (conversion == 's') {
      value = Value::string(to_str(value));
    } else if (conversion != 0) {
      format_error(fmt::format("Unknown conversion specifier {}", conversion));
    }
    if (spec.find('{') != std::string::npos)
      spec = format_fields(spec, args, numbering, levels - 1);
    out += format_value(value, spec);
    check_string(out.size());
  }
  return out;
}

}  // namespace

std::string str_format(const std::string& format, const CallArgs& args) {
  Numbering numbering;
  return format_fields(format, args, numbering, 2);
}

namespace {

void append_json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  auto escape = [&](char32_t c) {
    switch (c) {
      case '"':
        out += "\\\"";
        return;
      case '\\':
        out += "\\\\";
        return;
      case '\n':
        out += "\\n";
        return;
      case '\r':
        out += "\\r";
        return;
      case '\t':
        out += "\\t";
        return;
      case '\b':
        out += "\\b";
        return;
      case '\f':
        out += "\\f";
        return;
      default:
        break;
    }
    if (c < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    } else if (c < 0x80 || !ensure_ascii) {
      unicode::append(out, c);
    } else if (c < 0x10000) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    } else {
      const char32_t v = c - 0x10000;
      out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
    }
  };
  if (unicode::is_ascii(s)) {
    for (char ch : s) escape(static_cast<char32_t>(static_cast<unsigned char>(ch)));
  } else {
    for (char32_t c : unicode::decode(s)) escape(c);
  }
  out += '"';
}

std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return float_repr(d);
}

class JsonWriter {
 public:
  explicit JsonWriter(const JsonOptions& options)
      : options_(options),
        item_separator_(options.item_separator.value_or(options.indent ? "," : ", ")) {}

  void write(std::string& out, const Value& v, int level) {
    charge(1);
    check_string(out.size());
    switch (v.kind()) {
      case Value::Kind::kNone:
        out += "null";
        return;
      case Value::Kind::kBool:
        out += v.as_bool() ? "true" : "false";
        return;
      case Value::Kind::kInt:
        out += fmt::format("{}", v.as_int());
        return;
      case Value::Kind::kFloat:
        out += json_float(v.as_double());
        return;
      case Value::Kind::kString:
        check_string(out.size() + v.str().size());
        append_json_string(out, v.str(), options_.ensure_ascii);
        return;
      case Value::Kind::kList:
      case Value::Kind::kTuple: {
        // range and the dict views are lists inside; json.dumps refuses them.
        if (v.kind() == Value::Kind::kList && v.view() != SequenceView::kPlain) {
          throw_type_error(
              fmt::format("Object of type {} is not JSON serializable", v.type_name()));
        }
        const auto& items = v.items();
        if (items.empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (size_t i = 0; i < items.size(); ++i) {
          if (i > 0) out += item_separator_;
          newline(out, level + 1);
          write(out, items[i], level + 1);
        }
        newline(out, level);
        out += ']';
        return;
      }
      case Value::Kind::kDict:
        write_dict(out, v.dict(), level);
        return;
      default:
        throw_type_error(fmt::format("Object of type {} is not JSON serializable", v.type_name()));
    }
  }

 private:
  void newline(std::string& out, int level) {
    if (!options_.indent) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += *options_.indent;
  }

  std::string key_text(const Value& key) {
    switch (key.kind()) {
      case Value::Kind::kString:
        return key.str();
      case Value::Kind::kFloat:
        return json_float(key.as_double());
      case Value::Kind::kBool:
        return key.as_bool() ? "true" : "false";
      case Value::Kind::kInt:
        return fmt::format("{}", key.as_int());
      case Value::Kind::kNone:
        return "null";
      default:
        throw_type_error(
            fmt::format("keys must be str, int, float, bool or None, not {}", key.type_name()));
    }
  }

  void write_dict(std::string& out, const Dict& dict, int level) {
    if (dict.size() == 0) {
      out += "{}";
      return;
    }
    std::vector<const std::pair<Value, Value>*> entries;
    for (const auto& entry : dict.entries()) entries.push_back(&entry);
    if (options_.sort_keys) {
      std::stable_sort(entries.begin(), entries.end(), [](const auto* a, const auto* b) {
        return compare(a->first, b->first, CompareOp::kLess);
      });
    }
    out += '{';
    bool first = true;
    for (const auto* entry : entries) {
      if (!first) out += item_separator_;
      first = false;
      newline(out, level + 1);
      append_json_string(out, key_text(entry->first), options_.ensure_ascii);
      out += options_.key_separator;
      write(out, entry->second, level + 1);
    }
    newline(out, level);
    out += '}';
  }

  const JsonOptions& options_;
  std::string item_separator_;
};

}  // namespace

std::string json_dumps(const Value& value, const JsonOptions& options) {
  std::string out;
  JsonWriter(options).write(out, value, 0);
  return out;
}

}  // namespace loraserve::chat::jinja::py
