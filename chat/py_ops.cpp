#include "chat/py_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "chat/jinja_methods.h"
#include "chat/py_format.h"
#include "chat/unicode_text.h"

namespace loraserve::chat::jinja::py {
namespace {

thread_local Budget* current_budget = nullptr;

[[noreturn]] void overflow() {
  throw TemplateError("OverflowError",
                      "integer result does not fit in 64 bits (template integers are 64-bit)");
}

[[noreturn]] void zero_division(const char* what) {
  throw TemplateError("ZeroDivisionError", what);
}

// Python's exact comparison of an int with a float: -1, 0, 1, or 2 when the float is NaN.
int compare_int_double(int64_t i, double d) {
  if (std::isnan(d)) return 2;
  if (d >= 9223372036854775808.0) return -1;
  if (d < -9223372036854775808.0) return 1;
  const double truncated = std::trunc(d);
  const auto t = static_cast<int64_t>(truncated);
  if (i != t) return i < t ? -1 : 1;
  if (d == truncated) return 0;
  return d > truncated ? -1 : 1;
}

// -1, 0, 1, or 2 for unordered (NaN).
int compare_numbers(const Value& a, const Value& b) {
  if (a.is_int_like() && b.is_int_like()) {
    const int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_int_like()) return compare_int_double(a.as_int(), b.as_double());
  if (b.is_int_like()) {
    const int c = compare_int_double(b.as_int(), a.as_double());
    return c == 2 ? 2 : -c;
  }
  const double x = a.as_double(), y = b.as_double();
  if (std::isnan(x) || std::isnan(y)) return 2;
  return x < y ? -1 : x > y ? 1 : 0;
}

const char* op_symbol(CompareOp op) {
  switch (op) {
    case CompareOp::kLess:
      return "<";
    case CompareOp::kLessEqual:
      return "<=";
    case CompareOp::kGreater:
      return ">";
    case CompareOp::kGreaterEqual:
      return ">=";
  }
  return "?";
}

bool apply_order(int c, CompareOp op) {
  if (c == 2) return false;
  switch (op) {
    case CompareOp::kLess:
      return c < 0;
    case CompareOp::kLessEqual:
      return c <= 0;
    case CompareOp::kGreater:
      return c > 0;
    case CompareOp::kGreaterEqual:
      return c >= 0;
  }
  return false;
}

const char* binary_symbol(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAdd:
      return "+";
    case BinaryOp::kSub:
      return "-";
    case BinaryOp::kMul:
      return "*";
    case BinaryOp::kDiv:
      return "/";
    case BinaryOp::kFloorDiv:
      return "//";
    case BinaryOp::kMod:
      return "%";
    case BinaryOp::kPow:
      return "** or pow()";
  }
  return "?";
}

[[noreturn]] void unsupported(BinaryOp op, const Value& a, const Value& b) {
  throw_type_error(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'",
                               binary_symbol(op), a.type_name(), b.type_name()));
}

bool is_plain_list(const Value& v) { return v.is_list() && v.view() == SequenceView::kPlain; }

bool is_dict_view(const Value& v) {
  return v.is_list() && v.view() != SequenceView::kPlain && v.view() != SequenceView::kRange;
}

// What `* n` repeats: strings, lists and tuples (not dict views or ranges).
bool is_repeatable(const Value& v) { return v.is_string() || is_plain_list(v) || v.is_tuple(); }

Value repeat(const Value& seq, int64_t times) {
  if (times <= 0) {
    if (seq.is_string()) return Value::string("");
    return seq.is_tuple() ? Value::tuple({}) : Value::list({});
  }
  if (seq.is_string()) {
    const std::string& s = seq.str();
    if (!s.empty() &&
        static_cast<uint64_t>(times) > std::numeric_limits<size_t>::max() / s.size()) {
      check_string(std::numeric_limits<size_t>::max());
    }
    check_string(s.size() * static_cast<size_t>(times));
    charge(s.size() * static_cast<size_t>(times) / 64);
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += s;
    return Value::string(std::move(out));
  }
  const auto& items = seq.items();
  if (!items.empty() && static_cast<uint64_t>(times) > (1ull << 40) / items.size()) {
    charge(std::numeric_limits<uint64_t>::max());
  }
  charge(items.size() * static_cast<size_t>(times));
  std::vector<Value> out;
  out.reserve(items.size() * static_cast<size_t>(times));
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return seq.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

// Python's float floor division and modulo (Objects/floatobject.c float_divmod).
std::pair<double, double> float_divmod(double vx, double wx) {
  double mod = std::fmod(vx, wx);
  double div = (vx - mod) / wx;
  if (mod != 0.0) {
    if ((wx < 0) != (mod < 0)) {
      mod += wx;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, wx);
  }
  double floordiv;
  if (div != 0.0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, vx / wx);
  }
  return {floordiv, mod};
}

Value int_pow(int64_t base, int64_t exponent) {
  int64_t result = 1;
  int64_t b = base;
  while (exponent > 0) {
    if (exponent & 1) {
      if (__builtin_mul_overflow(result, b, &result)) overflow();
    }
    exponent >>= 1;
    if (exponent > 0 && __builtin_mul_overflow(b, b, &b)) overflow();
  }
  return Value::integer(result);
}

Value arithmetic(BinaryOp op, const Value& a, const Value& b) {
  if (a.is_int_like() && b.is_int_like()) {
    const int64_t x = a.as_int(), y = b.as_int();
    int64_t r;
    switch (op) {
      case BinaryOp::kAdd:
        if (__builtin_add_overflow(x, y, &r)) overflow();
        return Value::integer(r);
      case BinaryOp::kSub:
        if (__builtin_sub_overflow(x, y, &r)) overflow();
        return Value::integer(r);
      case BinaryOp::kMul:
        if (__builtin_mul_overflow(x, y, &r)) overflow();
        return Value::integer(r);
      case BinaryOp::kDiv:
        if (y == 0) zero_division("division by zero");
        return Value::number(static_cast<double>(x) / static_cast<double>(y));
      case BinaryOp::kFloorDiv:
      case BinaryOp::kMod: {
        if (y == 0) zero_division("integer division or modulo by zero");
        if (x == std::numeric_limits<int64_t>::min() && y == -1) overflow();
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          m += y;
          q -= 1;
        }
        return Value::integer(op == BinaryOp::kFloorDiv ? q : m);
      }
      case BinaryOp::kPow:
        if (y < 0) {
          if (x == 0) zero_division("0.0 cannot be raised to a negative power");
          return Value::number(std::pow(static_cast<double>(x), static_cast<double>(y)));
        }
        return int_pow(x, y);
    }
  }
  const double x = a.as_double(), y = b.as_double();
  switch (op) {
    case BinaryOp::kAdd:
      return Value::number(x + y);
    case BinaryOp::kSub:
      return Value::number(x - y);
    case BinaryOp::kMul:
      return Value::number(x * y);
    case BinaryOp::kDiv:
      if (y == 0.0) zero_division("float division by zero");
      return Value::number(x / y);
    case BinaryOp::kFloorDiv:
      if (y == 0.0) zero_division("float floor division by zero");
      return Value::number(float_divmod(x, y).first);
    case BinaryOp::kMod:
      if (y == 0.0) zero_division("float modulo");
      return Value::number(float_divmod(x, y).second);
    case BinaryOp::kPow:
      if (x == 0.0 && y < 0.0) zero_division("0.0 cannot be raised to a negative power");
      if (x < 0.0 && std::isfinite(y) && y != std::floor(y)) {
        throw TemplateError("ValueError",
                            "a negative number raised to a fractional power is complex, which "
                            "templates do not support");
      }
      {
        const double r = std::pow(x, y);
        if (std::isinf(r) && std::isfinite(x) && std::isfinite(y)) {
          throw TemplateError("OverflowError", "(34, 'Numerical result out of range')");
        }
        return Value::number(r);
      }
  }
  unsupported(op, a, b);
}

void append_sequence_repr(std::string& out, const Value& v) {
  if (v.is_list() && v.view() == SequenceView::kRange) {
    const int64_t* r = v.range_bounds();
    out += r[2] == 1 ? fmt::format("range({}, {})", r[0], r[1])
                     : fmt::format("range({}, {}, {})", r[0], r[1], r[2]);
    return;
  }
  const auto& items = v.items();
  const char* prefix = "";
  switch (v.view()) {
    case SequenceView::kDictKeys:
      prefix = "dict_keys(";
      break;
    case SequenceView::kDictValues:
      prefix = "dict_values(";
      break;
    case SequenceView::kDictItems:
      prefix = "dict_items(";
      break;
    case SequenceView::kRange:
    case SequenceView::kPlain:
      break;
  }
  out += prefix;
  out += v.is_tuple() ? '(' : '[';
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    append_repr(out, items[i]);
  }
  if (v.is_tuple() && items.size() == 1) out += ',';
  out += v.is_tuple() ? ')' : ']';
  if (*prefix != '\0') out += ')';
}

// Python's sequence[index] with negative indices counted from the end; nullopt when out of range.
std::optional<size_t> normalize_index(int64_t index, size_t size) {
  if (index < 0) index += static_cast<int64_t>(size);
  if (index < 0 || static_cast<uint64_t>(index) >= size) return std::nullopt;
  return static_cast<size_t>(index);
}

Value missing_attribute(const Value& obj, const std::string& name) {
  return Value::undefined(
      fmt::format("{} has no attribute {}", string_repr(object_type_repr(obj)), string_repr(name)));
}

Value missing_item(const Value& obj, const Value& key) {
  if (key.is_string()) return missing_attribute(obj, key.str());
  return Value::undefined(fmt::format("{} has no element {}", object_type_repr(obj), repr(key)));
}

bool is_dunder(const std::string& name) {
  return name.size() > 4 && name.compare(0, 2, "__") == 0 &&
         name.compare(name.size() - 2, 2, "__") == 0;
}

Value unsafe_attribute(const Value& obj, const std::string& name) {
  return Value::undefined(fmt::format("access to attribute {} of {} object is unsafe.",
                                      string_repr(name), string_repr(obj.type_name())),
                          "SecurityError");
}

// Python's getattr(obj, name) as the sandbox sees it: the attribute, an unsafe Undefined, or
// nullopt when the object has no such attribute.
std::optional<Value> python_attribute(const Value& obj, const std::string& name) {
  if (is_dunder(name)) return unsafe_attribute(obj, name);
  if (obj.is_object()) return obj.object().getattr(name);
  if (obj.is_int_like()) {
    if (name == "real" || name == "numerator") return Value::integer(obj.as_int());
    if (name == "imag") return Value::integer(0);
    if (name == "denominator") return Value::integer(1);
  }
  if (obj.kind() == Value::Kind::kFloat) {
    if (name == "real") return obj;
    if (name == "imag") return Value::number(0.0);
  }
  return method(obj, name);
}

}  // namespace

BudgetScope::BudgetScope(Budget* budget) : previous_(current_budget) { current_budget = budget; }
BudgetScope::~BudgetScope() { current_budget = previous_; }

void charge(uint64_t steps) {
  if (current_budget != nullptr) current_budget->charge(steps);
}

void check_string(size_t bytes) {
  if (current_budget != nullptr) current_budget->check_string(bytes);
}

void fail_undefined(const Value& v) {
  const std::string& message = v.undefined_message();
  throw TemplateError(v.undefined_kind(), message.empty() ? "value is undefined" : message);
}

bool truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.as_bool();
    case Value::Kind::kInt:
      return v.as_int() != 0;
    case Value::Kind::kFloat:
      return v.as_double() != 0.0;
    case Value::Kind::kString:
      return !v.str().empty();
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      return !v.items().empty();
    case Value::Kind::kDict:
      return v.dict().size() > 0;
    case Value::Kind::kGenerator:
    case Value::Kind::kObject:
      return true;
  }
  return false;
}

bool equal(const Value& a, const Value& b) {
  charge(1);
  if (a.is_number() && b.is_number()) return compare_numbers(a, b) == 0;
  if (a.kind() != b.kind()) return false;
  if (a.is_list() && a.view() != b.view()) return false;
  if (a.is_list() && a.view() != SequenceView::kPlain && a.view() != SequenceView::kRange) {
    // dict views: keys and items compare as sets, values only by identity.
    if (a.view() == SequenceView::kDictValues) return a.identity() == b.identity();
    if (a.items().size() != b.items().size()) return false;
    for (const Value& x : a.items()) {
      if (!contains(b, x)) return false;
    }
    return true;
  }
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.str() == b.str();
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      if (a.identity() == b.identity()) return true;
      const auto& x = a.items();
      const auto& y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (x[i].identity() != nullptr && x[i].identity() == y[i].identity()) continue;
        if (!equal(x[i], y[i])) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      if (a.identity() == b.identity()) return true;
      if (a.dict().size() != b.dict().size()) return false;
      for (const auto& [key, value] : a.dict().entries()) {
        const Value* other = b.dict().find(key);
        if (other == nullptr || !equal(value, *other)) return false;
      }
      return true;
    }
    default:
      return a.identity() == b.identity();
  }
}

bool compare(const Value& a, const Value& b, CompareOp op) {
  charge(1);
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) return apply_order(compare_numbers(a, b), op);
  if (a.is_string() && b.is_string()) {
    const int c = a.str().compare(b.str());
    return apply_order(c < 0 ? -1 : c > 0 ? 1 : 0, op);
  }
  if ((a.is_list() && b.is_list()) || (a.is_tuple() && b.is_tuple())) {
    const auto& x = a.items();
    const auto& y = b.items();
    const size_t n = std::min(x.size(), y.size());
    for (size_t i = 0; i < n; ++i) {
      if (!equal(x[i], y[i])) return compare(x[i], y[i], op);
    }
    return apply_order(x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0, op);
  }
  throw_type_error(fmt::format("'{}' not supported between instances of '{}' and '{}'",
                               op_symbol(op), a.type_name(), b.type_name()));
}

void check_hashable(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kList:
    case Value::Kind::kDict:
      throw_type_error(fmt::format("unhashable type: '{}'", v.type_name()));
    case Value::Kind::kTuple:
      for (const Value& item : v.items()) check_hashable(item);
      return;
    default:
      return;
  }
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kString:
      if (!item.is_string()) {
        throw_type_error(
            fmt::format("'in <string>' requires string as left operand, not {}", item.type_name()));
      }
      charge(container.str().size() / 64);
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      for (const Value& x : container.items()) {
        if (equal(x, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      return container.dict().find(item) != nullptr;
    case Value::Kind::kGenerator: {
      GeneratorState& g = container.generator_state();
      while (g.next < g.items.size()) {
        if (equal(g.items[g.next++], item)) return true;
      }
      return false;
    }
    case Value::Kind::kUndefined:
      return false;
    default:
      throw_type_error(fmt::format("argument of type '{}' is not iterable", container.type_name()));
  }
}

int64_t len(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kString:
      return static_cast<int64_t>(unicode::length(v.str()));
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      return static_cast<int64_t>(v.items().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.dict().size());
    case Value::Kind::kUndefined:
      return 0;
    default:
      throw_type_error(fmt::format("object of type '{}' has no len()", v.type_name()));
  }
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kString: {
      std::vector<Value> out;
      const std::string& s = v.str();
      charge(s.size());
      for (size_t i = 0; i < s.size();) {
        size_t n = 1;
        while (i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xC0) == 0x80) ++n;
        out.push_back(Value::string(s.substr(i, n)));
        i += n;
      }
      return out;
    }
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      return v.items();
    case Value::Kind::kDict: {
      std::vector<Value> out;
      out.reserve(v.dict().size());
      for (const auto& entry : v.dict().entries()) out.push_back(entry.first);
      return out;
    }
    case Value::Kind::kGenerator: {
      GeneratorState& g = v.generator_state();
      std::vector<Value> out(g.items.begin() + static_cast<std::ptrdiff_t>(g.next), g.items.end());
      g.next = g.items.size();
      return out;
    }
    case Value::Kind::kUndefined:
      return {};
    default:
      throw_type_error(fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

std::string to_str(const Value& v) {
  if (v.is_string()) return v.str();
  std::string out;
  append_str(out, v);
  return out;
}

void append_str(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return;
    case Value::Kind::kString:
      check_string(out.size() + v.str().size());
      out += v.str();
      return;
    default:
      append_repr(out, v);
  }
}

std::string repr(const Value& v) {
  std::string out;
  append_repr(out, v);
  return out;
}

void append_repr(std::string& out, const Value& v) {
  charge(1);
  check_string(out.size());
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      out += "Undefined";
      return;
    case Value::Kind::kNone:
      out += "None";
      return;
    case Value::Kind::kBool:
      out += v.as_bool() ? "True" : "False";
      return;
    case Value::Kind::kInt:
      out += fmt::format("{}", v.as_int());
      return;
    case Value::Kind::kFloat:
      out += float_repr(v.as_double());
      return;
    case Value::Kind::kString:
      check_string(out.size() + v.str().size());
      out += string_repr(v.str());
      return;
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      append_sequence_repr(out, v);
      return;
    case Value::Kind::kDict: {
      out += '{';
      bool first = true;
      for (const auto& [key, value] : v.dict().entries()) {
        if (!first) out += ", ";
        first = false;
        append_repr(out, key);
        out += ": ";
        append_repr(out, value);
      }
      out += '}';
      return;
    }
    case Value::Kind::kGenerator:
      out += "<generator object>";
      return;
    case Value::Kind::kObject:
      out += v.object().repr();
      return;
  }
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(result.ptr - buf));
  std::string out;
  if (sci.front() == '-') {
    out += '-';
    sci.remove_prefix(1);
  }
  const size_t e = sci.find('e');
  std::string digits;
  for (char ch : sci.substr(0, e)) {
    if (ch != '.') digits += ch;
  }
  const int exponent = std::stoi(std::string(sci.substr(e + 1)));
  const int decpt = exponent + 1;  // value = 0.<digits> × 10^decpt
  const int n = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (n > 1) {
      out += '.';
      out += digits.substr(1);
    }
    const int x = decpt - 1;
    out += fmt::format("e{}{:02d}", x < 0 ? '-' : '+', x < 0 ? -x : x);
  } else if (decpt <= 0) {
    out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
  } else if (decpt >= n) {
    out += digits + std::string(static_cast<size_t>(decpt - n), '0') + ".0";
  } else {
    out += digits.substr(0, static_cast<size_t>(decpt)) + "." +
           digits.substr(static_cast<size_t>(decpt));
  }
  return out;
}

std::string string_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out;
  out.reserve(s.size() + 2);
  out += quote;
  const bool ascii = unicode::is_ascii(s);
  auto append_char = [&](char32_t c) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned>(c));
    } else if (c < 0x7F) {
      out += static_cast<char>(c);
    } else if (unicode::is_printable(c)) {
      unicode::append(out, c);
    } else if (c < 0x100) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned>(c));
    } else if (c < 0x10000) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    } else {
      out += fmt::format("\\U{:08x}", static_cast<unsigned>(c));
    }
  };
  if (ascii) {
    for (char ch : s) append_char(static_cast<char32_t>(static_cast<unsigned char>(ch)));
  } else {
    for (char32_t c : unicode::decode(s)) append_char(c);
  }
  out += quote;
  return out;
}

Value binary(BinaryOp op, const Value& a, const Value& b) {
  // str.__mod__ takes any right operand (an Undefined too) before Python asks the right side.
  if (op == BinaryOp::kMod && a.is_string()) return Value::string(percent_format(a.str(), b));
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) return arithmetic(op, a, b);
  switch (op) {
    case BinaryOp::kAdd:
      if (a.is_string() && b.is_string()) {
        check_string(a.str().size() + b.str().size());
        charge((a.str().size() + b.str().size()) / 64);
        return Value::string(a.str() + b.str());
      }
      if ((is_plain_list(a) && is_plain_list(b)) || (a.is_tuple() && b.is_tuple())) {
        std::vector<Value> items = a.items();
        charge(items.size() + b.items().size());
        items.insert(items.end(), b.items().begin(), b.items().end());
        return a.is_tuple() ? Value::tuple(std::move(items)) : Value::list(std::move(items));
      }
      if (a.is_string() || is_plain_list(a) || a.is_tuple()) {
        throw_type_error(fmt::format("can only concatenate {} (not \"{}\") to {}", a.type_name(),
                                     b.type_name(), a.type_name()));
      }
      break;
    case BinaryOp::kMul:
      if (is_repeatable(a) && b.is_int_like()) return repeat(a, b.as_int());
      if (a.is_int_like() && is_repeatable(b)) return repeat(b, a.as_int());
      if (is_repeatable(a) || is_repeatable(b)) {
        const Value& other = is_repeatable(a) ? b : a;
        throw_type_error(
            fmt::format("can't multiply sequence by non-int of type '{}'", other.type_name()));
      }
      break;
    default:
      break;
  }
  unsupported(op, a, b);
}

Value negate(const Value& v) {
  if (v.is_undefined()) fail_undefined(v);
  if (v.is_int_like()) {
    if (v.as_int() == std::numeric_limits<int64_t>::min()) overflow();
    return Value::integer(-v.as_int());
  }
  if (v.kind() == Value::Kind::kFloat) return Value::number(-v.as_double());
  throw_type_error(fmt::format("bad operand type for unary -: '{}'", v.type_name()));
}

Value positive(const Value& v) {
  if (v.is_undefined()) fail_undefined(v);
  if (v.is_int_like()) return Value::integer(v.as_int());
  if (v.kind() == Value::Kind::kFloat) return v;
  throw_type_error(fmt::format("bad operand type for unary +: '{}'", v.type_name()));
}

std::string object_type_repr(const Value& v) {
  if (v.is_none()) return "None";
  if (v.is_object()) return "jinja2 " + v.type_name() + " object";
  return v.type_name() + " object";
}

std::optional<Value> attribute(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail_undefined(obj);
  return python_attribute(obj, name);
}

Value getattr(const Value& obj, const std::string& name) {
  charge(1);
  if (obj.is_undefined()) fail_undefined(obj);
  if (std::optional<Value> attribute = python_attribute(obj, name)) return *std::move(attribute);
  if (obj.is_dict()) {
    if (const Value* found = obj.dict().find(std::string_view(name))) return *found;
  }
  return missing_attribute(obj, name);
}

Value getitem(const Value& obj, const Value& key) {
  charge(1);
  if (obj.is_undefined()) fail_undefined(obj);
  switch (obj.kind()) {
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      if (key.is_int_like() && !is_dict_view(obj)) {
        if (auto i = normalize_index(key.as_int(), obj.items().size())) return obj.items()[*i];
        return missing_item(obj, key);
      }
      break;
    case Value::Kind::kString:
      if (key.is_int_like()) {
        const std::string& s = obj.str();
        if (unicode::is_ascii(s)) {
          if (auto i = normalize_index(key.as_int(), s.size()))
            return Value::string(s.substr(*i, 1));
        } else {
          const std::u32string cps = unicode::decode(s);
          if (auto i = normalize_index(key.as_int(), cps.size())) {
            std::string out;
            unicode::append(out, cps[*i]);
            return Value::string(std::move(out));
          }
        }
        return missing_item(obj, key);
      }
      break;
    case Value::Kind::kDict:
      if (key.kind() == Value::Kind::kList || key.kind() == Value::Kind::kDict) break;
      if (const Value* found = obj.dict().find(key)) return *found;
      break;
    default:
      break;
  }
  if (key.is_string()) {
    if (std::optional<Value> attribute = python_attribute(obj, key.str())) {
      return *std::move(attribute);
    }
  }
  return missing_item(obj, key);
}

Value getslice(const Value& obj, const std::optional<Value>& start,
               const std::optional<Value>& stop, const std::optional<Value>& step, bool sandboxed) {
  if (obj.is_undefined()) fail_undefined(obj);
  if (sandboxed) {
    try {
      return getslice(obj, start, stop, step, false);
    } catch (const TemplateError& e) {
      if (e.kind() != "TypeError") throw;
      std::string text = "slice(";
      for (const auto* part : {&start, &stop, &step}) {
        if (part != &start) text += ", ";
        text += *part ? repr(**part) : "None";
      }
      return Value::undefined(fmt::format("{} has no element {})", object_type_repr(obj), text));
    }
  }
  // Jinja compiles a slice to a plain Python subscript (not the sandbox's getitem), so what
  // cannot be sliced is a TypeError, not an Undefined.
  auto bound = [](const std::optional<Value>& v) -> std::optional<int64_t> {
    if (!v || v->is_none()) return std::nullopt;
    if (!v->is_int_like()) {
      throw_type_error("slice indices must be integers or None or have an __index__ method");
    }
    return v->as_int();
  };
  if (obj.is_dict()) throw_type_error("unhashable type: 'slice'");
  if (!obj.is_string() && (!obj.is_sequence() || is_dict_view(obj))) {
    throw_type_error(fmt::format("'{}' object is not subscriptable", obj.type_name()));
  }
  const std::optional<int64_t> start_index = bound(start);
  const std::optional<int64_t> stop_index = bound(stop);
  const std::optional<int64_t> step_index = bound(step);
  const int64_t step_value = step_index.value_or(1);
  if (step_value == 0) throw TemplateError("ValueError", "slice step cannot be zero");
  const bool ascii = obj.is_string() && unicode::is_ascii(obj.str());
  std::u32string cps;
  if (obj.is_string() && !ascii) cps = unicode::decode(obj.str());
  const auto size = static_cast<int64_t>(obj.is_string() ? (ascii ? obj.str().size() : cps.size())
                                                         : obj.items().size());
  // PySlice_AdjustIndices.
  auto adjust = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v) return fallback;
    int64_t x = *v;
    if (x < 0) {
      x += size;
      if (x < 0) x = step_value < 0 ? -1 : 0;
    } else if (x >= size) {
      x = step_value < 0 ? size - 1 : size;
    }
    return x;
  };
  const int64_t lo = adjust(start_index, step_value < 0 ? size - 1 : 0);
  const int64_t hi = adjust(stop_index, step_value < 0 ? -1 : size);
  std::vector<int64_t> indices;
  for (int64_t i = lo; step_value > 0 ? i < hi : i > hi; i += step_value) indices.push_back(i);
  charge(indices.size());
  if (obj.is_string()) {
    std::string out;
    for (int64_t i : indices) {
      if (ascii) {
        out += obj.str()[static_cast<size_t>(i)];
      } else {
        unicode::append(out, cps[static_cast<size_t>(i)]);
      }
    }
    return Value::string(std::move(out));
  }
  std::vector<Value> out;
  out.reserve(indices.size());
  for (int64_t i : indices) out.push_back(obj.items()[static_cast<size_t>(i)]);
  if (obj.is_list() && obj.view() == SequenceView::kRange) {
    const int64_t* r = obj.range_bounds();
    return Value::range(std::move(out), r[0] + lo * r[2], r[0] + hi * r[2], r[2] * step_value);
  }
  return obj.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

}  // namespace loraserve::chat::jinja::py
