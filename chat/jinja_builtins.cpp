// Jinja2's tests (jinja2/tests.py) and the global functions of transformers' chat-template
// environment. The filters are in jinja_filters.cpp.
#include "chat/jinja_builtins.h"

#include <fmt/format.h>
#include <sys/time.h>

#include <algorithm>
#include <ctime>
#include <limits>

#include "chat/jinja_interpreter.h"
#include "chat/jinja_methods.h"
#include "chat/py_ops.h"

namespace loraserve::chat::jinja {
namespace {

// The sandbox's range() limit.
constexpr int64_t kMaxRange = 100000;

const Value& one_argument(const char* test, const CallArgs& args) {
  if (args.positional.size() != 1 || !args.keyword.empty()) {
    throw_type_error(fmt::format("test '{}' takes exactly one argument", test));
  }
  return args.positional[0];
}

void no_arguments(const char* test, const CallArgs& args) {
  if (!args.positional.empty() || !args.keyword.empty()) {
    throw_type_error(fmt::format("test '{}' takes no arguments", test));
  }
}

bool t_defined(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("defined", a);
  return !v.is_undefined();
}
bool t_undefined(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("undefined", a);
  return v.is_undefined();
}
bool t_none(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("none", a);
  return v.is_none();
}
bool t_boolean(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("boolean", a);
  return v.is_bool();
}
bool t_false(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("false", a);
  return v.is_bool() && !v.as_bool();
}
bool t_true(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("true", a);
  return v.is_bool() && v.as_bool();
}
bool t_integer(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("integer", a);
  return v.kind() == Value::Kind::kInt;
}
bool t_float(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("float", a);
  return v.kind() == Value::Kind::kFloat;
}
bool t_number(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("number", a);
  return v.is_number();
}
bool t_string(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("string", a);
  return v.is_string();
}
bool t_mapping(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("mapping", a);
  return v.is_dict();
}
bool t_iterable(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("iterable", a);
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kString:
    case Value::Kind::kList:
    case Value::Kind::kTuple:
    case Value::Kind::kDict:
    case Value::Kind::kGenerator:
      return true;
    case Value::Kind::kObject:
      return v.type_name() == "LoopContext";
    default:
      return false;
  }
}
bool t_sequence(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("sequence", a);
  // len() and __getitem__: not the dict views.
  const bool dict_view =
      v.is_list() && v.view() != SequenceView::kPlain && v.view() != SequenceView::kRange;
  return v.is_undefined() || v.is_string() || (v.is_sequence() && !dict_view) || v.is_dict();
}
bool t_callable(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("callable", a);
  return v.is_undefined() || (v.is_object() && v.object().callable());
}
bool t_escaped(Interpreter&, const Value&, CallArgs& a) {
  no_arguments("escaped", a);
  return false;
}

// Python's `is`: singletons, small cached ints, and shared containers and strings.
bool t_sameas(Interpreter&, const Value& v, CallArgs& a) {
  const Value& other = one_argument("sameas", a);
  if (v.kind() != other.kind()) return false;
  switch (v.kind()) {
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kBool:
      return v.as_bool() == other.as_bool();
    case Value::Kind::kInt:
      return v.as_int() == other.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
    case Value::Kind::kFloat:
      return false;
    default:
      return v.identity() == other.identity();
  }
}

bool t_in(Interpreter&, const Value& v, CallArgs& a) {
  return py::contains(one_argument("in", a), v);
}

bool remainder_is(const Value& v, const Value& divisor, int64_t expected) {
  return py::equal(py::binary(py::BinaryOp::kMod, v, divisor), Value::integer(expected));
}
bool t_odd(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("odd", a);
  return remainder_is(v, Value::integer(2), 1);
}
bool t_even(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("even", a);
  return remainder_is(v, Value::integer(2), 0);
}
bool t_divisibleby(Interpreter&, const Value& v, CallArgs& a) {
  return remainder_is(v, one_argument("divisibleby", a), 0);
}

bool t_eq(Interpreter&, const Value& v, CallArgs& a) { return py::equal(v, one_argument("eq", a)); }
bool t_ne(Interpreter&, const Value& v, CallArgs& a) {
  return !py::equal(v, one_argument("ne", a));
}
bool t_lt(Interpreter&, const Value& v, CallArgs& a) {
  return py::compare(v, one_argument("lt", a), py::CompareOp::kLess);
}
bool t_le(Interpreter&, const Value& v, CallArgs& a) {
  return py::compare(v, one_argument("le", a), py::CompareOp::kLessEqual);
}
bool t_gt(Interpreter&, const Value& v, CallArgs& a) {
  return py::compare(v, one_argument("gt", a), py::CompareOp::kGreater);
}
bool t_ge(Interpreter&, const Value& v, CallArgs& a) {
  return py::compare(v, one_argument("ge", a), py::CompareOp::kGreaterEqual);
}

bool t_lower(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("lower", a);
  return py::truthy(py::call_method(Value::string(py::to_str(v)), "islower", {}));
}
bool t_upper(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("upper", a);
  return py::truthy(py::call_method(Value::string(py::to_str(v)), "isupper", {}));
}

bool t_filter(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("filter", a);
  return v.is_string() && find_filter(v.str()) != nullptr;
}
bool t_test(Interpreter&, const Value& v, CallArgs& a) {
  no_arguments("test", a);
  return v.is_string() && find_test(v.str()) != nullptr;
}

struct TestEntry {
  const char* name;
  TestFn fn;
};

constexpr TestEntry kTests[] = {
    {"!=", t_ne},
    {"<", t_lt},
    {"<=", t_le},
    {"==", t_eq},
    {">", t_gt},
    {">=", t_ge},
    {"boolean", t_boolean},
    {"callable", t_callable},
    {"defined", t_defined},
    {"divisibleby", t_divisibleby},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"escaped", t_escaped},
    {"even", t_even},
    {"false", t_false},
    {"filter", t_filter},
    {"float", t_float},
    {"ge", t_ge},
    {"greaterthan", t_gt},
    {"gt", t_gt},
    {"in", t_in},
    {"integer", t_integer},
    {"iterable", t_iterable},
    {"le", t_le},
    {"lessthan", t_lt},
    {"lower", t_lower},
    {"lt", t_lt},
    {"mapping", t_mapping},
    {"ne", t_ne},
    {"none", t_none},
    {"number", t_number},
    {"odd", t_odd},
    {"sameas", t_sameas},
    {"sequence", t_sequence},
    {"string", t_string},
    {"test", t_test},
    {"true", t_true},
    {"undefined", t_undefined},
    {"upper", t_upper},
};

// ---- global functions ----

using BuiltinFn = Value (*)(Interpreter&, CallArgs&);

class Builtin : public Object {
 public:
  Builtin(std::string name, BuiltinFn fn) : name_(std::move(name)), fn_(fn) {}
  std::string type_name() const override { return "builtin_function_or_method"; }
  bool callable() const override { return true; }
  Value call(Interpreter& interpreter, CallArgs args) override { return fn_(interpreter, args); }
  std::string repr() const override { return fmt::format("<built-in function {}>", name_); }

 private:
  std::string name_;
  BuiltinFn fn_;
};

// Python's dict(*args, **kwargs): a mapping or an iterable of pairs, then the keywords.
std::shared_ptr<Dict> make_dict(const char* what, const CallArgs& args) {
  if (args.positional.size() > 1) {
    throw_type_error(
        fmt::format("{} expected at most 1 argument, got {}", what, args.positional.size()));
  }
  auto dict = std::make_shared<Dict>();
  if (!args.positional.empty()) {
    const Value& source = args.positional[0];
    if (source.is_dict()) {
      for (const auto& [key, value] : source.dict().entries()) dict->set(key, value);
    } else {
      size_t index = 0;
      for (const Value& pair : py::iterate(source)) {
        std::vector<Value> kv = py::iterate(pair);
        if (kv.size() != 2) {
          throw TemplateError("ValueError",
                              fmt::format("dictionary update sequence element #{} has length {}; "
                                          "2 is required",
                                          index, kv.size()));
        }
        dict->set(kv[0], kv[1]);
        ++index;
      }
    }
  }
  for (const auto& [key, value] : args.keyword) dict->set(Value::string(key), value);
  return dict;
}

class Namespace : public Object {
 public:
  explicit Namespace(std::shared_ptr<Dict> attributes) : attributes_(std::move(attributes)) {}
  std::string type_name() const override { return "Namespace"; }
  std::optional<Value> getattr(const std::string& name) const override {
    if (const Value* v = attributes_->find(std::string_view(name))) return *v;
    return std::nullopt;
  }
  bool set_attribute(const std::string& name, Value value) override {
    attributes_->set(Value::string(name), std::move(value));
    return true;
  }
  std::string repr() const override {
    return "<Namespace " + py::repr(Value::dict(attributes_)) + ">";
  }

 private:
  std::shared_ptr<Dict> attributes_;
};

class Cycler : public Object, public std::enable_shared_from_this<Cycler> {
 public:
  explicit Cycler(std::vector<Value> items) : items_(std::move(items)) {}
  std::string type_name() const override { return "Cycler"; }
  std::optional<Value> getattr(const std::string& name) const override {
    if (name == "current") return items_[position_];
    if (name == "items") return Value::list(items_);
    if (name == "next" || name == "reset") {
      auto self = std::const_pointer_cast<Cycler>(shared_from_this());
      return Value::object(std::make_shared<Method>(std::move(self), name == "next"));
    }
    return std::nullopt;
  }

 private:
  class Method : public Object {
   public:
    Method(std::shared_ptr<Cycler> cycler, bool next) : cycler_(std::move(cycler)), next_(next) {}
    std::string type_name() const override { return "method"; }
    bool callable() const override { return true; }
    Value call(Interpreter&, CallArgs args) override {
      if (!args.positional.empty() || !args.keyword.empty()) {
        throw_type_error("cycler methods take no arguments");
      }
      if (!next_) {
        cycler_->position_ = 0;
        return Value::none();
      }
      const size_t current = cycler_->position_;
      cycler_->position_ = (current + 1) % cycler_->items_.size();
      return cycler_->items_[current];
    }

   private:
    std::shared_ptr<Cycler> cycler_;
    bool next_;
  };

  std::vector<Value> items_;
  size_t position_ = 0;
};

class Joiner : public Object {
 public:
  explicit Joiner(std::string separator) : separator_(std::move(separator)) {}
  std::string type_name() const override { return "Joiner"; }
  bool callable() const override { return true; }
  Value call(Interpreter&, CallArgs) override {
    if (!used_) {
      used_ = true;
      return Value::string("");
    }
    return Value::string(separator_);
  }

 private:
  std::string separator_;
  bool used_ = false;
};

int64_t range_argument(const Value& v) {
  if (!v.is_int_like()) {
    throw_type_error(fmt::format("'{}' object cannot be interpreted as an integer", v.type_name()));
  }
  return v.as_int();
}

Value g_range(Interpreter&, CallArgs& args) {
  if (!args.keyword.empty()) throw_type_error("range() takes no keyword arguments");
  const size_t n = args.positional.size();
  if (n < 1 || n > 3) {
    throw_type_error(n == 0 ? "range expected at least 1 argument, got 0"
                            : fmt::format("range expected at most 3 arguments, got {}", n));
  }
  int64_t start = 0, stop, step = 1;
  if (n == 1) {
    stop = range_argument(args.positional[0]);
  } else {
    start = range_argument(args.positional[0]);
    stop = range_argument(args.positional[1]);
    if (n == 3) step = range_argument(args.positional[2]);
  }
  if (step == 0) throw TemplateError("ValueError", "range() arg 3 must not be zero");
  // Length as Python computes it, in 128 bits so that no bound overflows.
  const __int128 span =
      step > 0 ? static_cast<__int128>(stop) - start : static_cast<__int128>(start) - stop;
  const __int128 magnitude = step > 0 ? step : -static_cast<__int128>(step);
  const __int128 length = span <= 0 ? 0 : (span - 1) / magnitude + 1;
  if (length > kMaxRange) {
    throw TemplateError("OverflowError",
                        fmt::format("Range too big. The sandbox blocks ranges larger than "
                                    "MAX_RANGE ({}).",
                                    kMaxRange));
  }
  py::charge(static_cast<uint64_t>(length));
  std::vector<Value> items;
  items.reserve(static_cast<size_t>(length));
  for (__int128 i = 0; i < length; ++i) {
    items.push_back(Value::integer(static_cast<int64_t>(start + i * step)));
  }
  return Value::range(std::move(items), start, stop, step);
}

Value g_dict(Interpreter&, CallArgs& args) { return Value::dict(make_dict("dict", args)); }

Value g_namespace(Interpreter&, CallArgs& args) {
  return Value::object(std::make_shared<Namespace>(make_dict("namespace", args)));
}

Value g_cycler(Interpreter&, CallArgs& args) {
  if (!args.keyword.empty()) throw_type_error("cycler() takes no keyword arguments");
  if (args.positional.empty())
    throw TemplateError("RuntimeError", "at least one item has to be provided");
  return Value::object(std::make_shared<Cycler>(args.positional));
}

Value g_joiner(Interpreter&, CallArgs& args) {
  Value separator = Value::string(", ");
  if (args.positional.size() > 1) throw_type_error("joiner() takes at most 1 argument");
  if (!args.positional.empty()) separator = args.positional[0];
  for (const auto& [key, value] : args.keyword) {
    if (key != "sep") {
      throw_type_error(fmt::format("joiner() got an unexpected keyword argument '{}'", key));
    }
    separator = value;
  }
  return Value::object(std::make_shared<Joiner>(py::to_str(separator)));
}

Value g_raise_exception(Interpreter&, CallArgs& args) {
  if (args.positional.size() + args.keyword.size() != 1 ||
      (!args.keyword.empty() && args.keyword[0].first != "message")) {
    throw_type_error("raise_exception() takes exactly one argument, the message");
  }
  const Value& message = args.positional.empty() ? args.keyword[0].second : args.positional[0];
  throw TemplateError("TemplateError", py::to_str(message));
}

// datetime.now().strftime(format): %f is the microseconds, %z and %Z are empty (a naive local
// time); everything else is C's strftime, as Python's is.
Value g_strftime_now(Interpreter&, CallArgs& args) {
  if (args.positional.size() + args.keyword.size() != 1 ||
      (!args.keyword.empty() && args.keyword[0].first != "format")) {
    throw_type_error("strftime_now() takes exactly one argument, the format");
  }
  const Value& format_value = args.positional.empty() ? args.keyword[0].second : args.positional[0];
  if (!format_value.is_string()) {
    throw_type_error(
        fmt::format("strftime() argument 1 must be str, not {}", format_value.type_name()));
  }
  const std::string& format = format_value.str();
  if (format.find('\0') != std::string::npos) {
    throw TemplateError("ValueError", "embedded null character");
  }
  timeval now{};
  gettimeofday(&now, nullptr);
  std::string expanded;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] == '%' && i + 1 < format.size()) {
      const char c = format[i + 1];
      if (c == 'f') {
        expanded += fmt::format("{:06d}", static_cast<int>(now.tv_usec));
        ++i;
        continue;
      }
      if (c == 'z' || c == 'Z') {
        ++i;
        continue;
      }
      expanded += format[i];
      expanded += c;
      ++i;
      continue;
    }
    expanded += format[i];
  }
  py::check_string(expanded.size() * 64);
  std::tm local{};
  const time_t seconds = now.tv_sec;
  localtime_r(&seconds, &local);
  for (size_t size = 1024 + expanded.size() * 4;; size *= 4) {
    std::string out(size, '\0');
    const size_t n = std::strftime(out.data(), out.size(), expanded.c_str(), &local);
    if (n > 0 || size > 256 * (expanded.size() + 4)) {
      out.resize(n);
      return Value::string(std::move(out));
    }
  }
}

Value g_lipsum(Interpreter&, CallArgs&) {
  throw TemplateError("TemplateError",
                      "lipsum() (random text) is not supported by loraserve's template renderer");
}

}  // namespace

TestFn find_test(const std::string& name) {
  for (const TestEntry& entry : kTests) {
    if (name == entry.name) return entry.fn;
  }
  return nullptr;
}

std::string unknown_test_message(const std::string& name) {
  return fmt::format("No test named '{}'.", name);
}

std::vector<std::pair<std::string, Value>> global_functions() {
  const std::pair<const char*, BuiltinFn> functions[] = {
      {"range", g_range},
      {"dict", g_dict},
      {"namespace", g_namespace},
      {"cycler", g_cycler},
      {"joiner", g_joiner},
      {"lipsum", g_lipsum},
      {"raise_exception", g_raise_exception},
      {"strftime_now", g_strftime_now},
  };
  std::vector<std::pair<std::string, Value>> out;
  for (const auto& [name, fn] : functions) {
    out.emplace_back(name, Value::object(std::make_shared<Builtin>(name, fn)));
  }
  return out;
}

}  // namespace loraserve::chat::jinja
