// The values a chat template computes with, modelled on the Python objects Jinja2 hands around:
// Undefined (with the message its misuse raises), None, bool, int, float, str, list, tuple,
// dict (insertion-ordered), one-shot generators (what Jinja's select/map/unique/... filters
// return) and objects (namespaces, macros, loops, bound methods). Strings are UTF-8 and indexed
// by code point as Python's are. Containers are immutable once built (the transformers sandbox
// forbids mutating them), so a Value is a cheap shared handle; only namespaces, generators and
// loop objects hold state. Not thread-safe: one render owns its values.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace loraserve::chat::jinja {

// Every error while parsing or rendering a template: the Python exception kind ("TypeError",
// "UndefinedError", "TemplateSyntaxError", ...), its message and the template line (0 when not
// known yet; the interpreter fills in the line of the node it was evaluating). Thrown inside the
// renderer only; ChatTemplate turns it into a Status.
class TemplateError : public std::runtime_error {
 public:
  TemplateError(std::string kind, std::string message, int line = 0);
  const std::string& kind() const { return kind_; }
  const std::string& detail() const { return detail_; }
  int line() const { return line_; }
  void set_line(int line) { line_ = line; }

 private:
  std::string kind_;
  std::string detail_;
  int line_;
};

[[noreturn]] void throw_type_error(std::string message);

// Work and size bounds of one render, charged by every operation that can be made to loop or
// grow by a template or its input (a hostile one must get an error, not a hung or killed
// server). Throws TemplateError("LimitError", ...) when exceeded.
class Budget {
 public:
  Budget(uint64_t max_steps, size_t max_string_bytes)
      : steps_left_(max_steps), max_steps_(max_steps), max_string_bytes_(max_string_bytes) {}
  void charge(uint64_t steps);
  // REQUIRES: nothing; throws when a string of `bytes` would pass the bound.
  void check_string(size_t bytes) const;
  size_t max_string_bytes() const { return max_string_bytes_; }
  uint64_t used() const { return max_steps_ - steps_left_; }

 private:
  uint64_t steps_left_;
  uint64_t max_steps_;
  size_t max_string_bytes_;
};

class Value;
class Dict;
class Object;
class Interpreter;

// Deepest nesting of lists, tuples and dicts a value may have (input JSON or built by a
// template); every recursive walk over values is bounded by it.
inline constexpr int kMaxValueDepth = 256;

// Which Python view a sequence prints as (dict.keys() and friends iterate like lists).
enum class SequenceView : uint8_t { kPlain, kDictKeys, kDictValues, kDictItems, kRange };

struct Sequence {
  std::vector<Value> items;
  int depth = 1;
  SequenceView view = SequenceView::kPlain;
  int64_t range[3] = {0, 0, 1};  // start, stop, step of a range()
};

// The values a one-shot generator still has to yield (its items are computed when it is made).
struct GeneratorState {
  std::vector<Value> items;
  size_t next = 0;
};

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kTuple,
    kDict,
    kGenerator,
    kObject,
  };

  // Undefined without a hint (the value of a missing name before the interpreter names it).
  Value() = default;
  static Value undefined(std::string message, std::string exception_kind = "UndefinedError");
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value number(double d);
  static Value string(std::string s);
  static Value list(std::vector<Value> items, SequenceView view = SequenceView::kPlain);
  static Value tuple(std::vector<Value> items);
  // range(start, stop, step) with its items.
  static Value range(std::vector<Value> items, int64_t start, int64_t stop, int64_t step);
  static Value dict(std::shared_ptr<const Dict> dict);
  static Value generator(std::vector<Value> items);
  static Value object(std::shared_ptr<Object> object);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  // Python's int, which bool is a subclass of.
  bool is_int_like() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }
  bool is_number() const { return is_int_like() || kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kTuple; }
  bool is_sequence() const { return kind_ == Kind::kList || kind_ == Kind::kTuple; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_generator() const { return kind_ == Kind::kGenerator; }
  bool is_object() const { return kind_ == Kind::kObject; }

  // REQUIRES: the matching kind.
  bool as_bool() const { return scalar_.b; }
  // REQUIRES: is_int_like().
  int64_t as_int() const { return kind_ == Kind::kBool ? (scalar_.b ? 1 : 0) : scalar_.i; }
  // REQUIRES: is_number().
  double as_double() const;
  const std::string& str() const;                     // REQUIRES: is_string()
  const std::string& undefined_message() const;       // REQUIRES: is_undefined()
  const std::string& undefined_kind() const;          // REQUIRES: is_undefined()
  const std::vector<Value>& items() const;            // REQUIRES: is_sequence()
  SequenceView view() const;                          // REQUIRES: is_sequence()
  const int64_t* range_bounds() const;                // REQUIRES: view() == kRange
  const Dict& dict() const;                           // REQUIRES: is_dict()
  GeneratorState& generator_state() const;            // REQUIRES: is_generator()
  Object& object() const;                             // REQUIRES: is_object()
  const std::shared_ptr<Object>& object_ptr() const;  // REQUIRES: is_object()
  // Identity of the container or object behind the value (nullptr for scalars).
  const void* identity() const;
  // Nesting depth: 0 for scalars, 1 + the deepest element for containers.
  int depth() const;

  // Python's type(x).__name__: 'str', 'dict', 'NoneType', 'Undefined', 'Namespace', ...
  std::string type_name() const;

 private:
  struct Hint {
    std::string message;
    std::string kind;
  };
  Kind kind_ = Kind::kUndefined;
  union {
    bool b;
    int64_t i;
    double d;
  } scalar_{};
  std::variant<std::monostate, std::shared_ptr<const std::string>, std::shared_ptr<const Hint>,
               std::shared_ptr<const Sequence>, std::shared_ptr<const Dict>,
               std::shared_ptr<GeneratorState>, std::shared_ptr<Object>>
      ptr_;
};

// A Python dict: keys are hashable values (str, int, float, bool, None, tuples of those), kept in
// insertion order; 1, 1.0 and True are the same key as in Python.
class Dict {
 public:
  // Inserts or replaces. Throws TypeError for an unhashable key (list, dict, ...).
  void set(Value key, Value value);
  // nullptr when absent; throws TypeError for an unhashable key.
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  const std::vector<std::pair<Value, Value>>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  int depth() const { return depth_; }

 private:
  std::vector<std::pair<Value, Value>> entries_;
  // String keys → index in entries_ (the common case, found without a scan); other keys are
  // few and found by comparing.
  std::unordered_map<std::string, size_t> string_index_;
  int depth_ = 1;
};

// Arguments of a call: positional, then keyword in call order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// Python objects that are neither scalars nor containers: namespaces, macros, loop contexts,
// builtin functions, bound methods, cyclers, joiners.
class Object {
 public:
  virtual ~Object() = default;
  // Python's type name, for messages ("Namespace", "Macro", "LoopContext", ...).
  virtual std::string type_name() const = 0;
  // The attribute, or nullopt when the object has none (Jinja then tries an item lookup).
  virtual std::optional<Value> getattr(const std::string& name) const;
  virtual bool callable() const { return false; }
  // REQUIRES: callable().
  virtual Value call(Interpreter& interpreter, CallArgs args);
  // str() and repr() of the object.
  virtual std::string repr() const;
  // `{% set obj.name = value %}`; only namespace() objects accept it (returns false otherwise).
  virtual bool set_attribute(const std::string& name, Value value);
};

}  // namespace loraserve::chat::jinja
