// Python's semantics on template values, as Jinja2 (which compiles templates to Python) gets
// them: truthiness, ==, ordering, `in`, len(), iteration, str(), repr(), the arithmetic
// operators, and the sandboxed attribute and item lookups of transformers'
// ImmutableSandboxedEnvironment. Errors are TemplateErrors with Python's exception kind and
// message. Recursive operations charge the render's Budget (see BudgetScope).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "chat/jinja_value.h"

namespace loraserve::chat::jinja::py {

// Makes `budget` the one the operations below charge on this thread until destroyed (a render
// runs on one thread; scopes nest).
class BudgetScope {
 public:
  explicit BudgetScope(Budget* budget);
  ~BudgetScope();
  BudgetScope(const BudgetScope&) = delete;
  BudgetScope& operator=(const BudgetScope&) = delete;

 private:
  Budget* previous_;
};
// Charges the current budget (no-op without one).
void charge(uint64_t steps);
// Throws when a string of `bytes` would pass the current budget's size bound.
void check_string(size_t bytes);

// Raises the error an Undefined raises when used (UndefinedError, or SecurityError for an unsafe
// attribute). REQUIRES: v.is_undefined()
[[noreturn]] void fail_undefined(const Value& v);

bool truthy(const Value& v);
bool equal(const Value& a, const Value& b);
enum class CompareOp { kLess, kLessEqual, kGreater, kGreaterEqual };
// a < b, a <= b, ...; TypeError between unorderable types.
bool compare(const Value& a, const Value& b, CompareOp op);
// TypeError "unhashable type: 'list'" for lists, dicts and tuples holding them.
void check_hashable(const Value& v);
// `item in container`.
bool contains(const Value& container, const Value& item);
// len(); TypeError when the value has none.
int64_t len(const Value& v);
// The items iter(v) yields (a string's characters, a dict's keys; consumes a generator);
// TypeError when not iterable. Undefined yields nothing.
std::vector<Value> iterate(const Value& v);

// str() and repr(); str() of Undefined is "".
std::string to_str(const Value& v);
void append_str(std::string& out, const Value& v);
std::string repr(const Value& v);
void append_repr(std::string& out, const Value& v);
std::string float_repr(double d);
std::string string_repr(const std::string& s);

enum class BinaryOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow };
Value binary(BinaryOp op, const Value& a, const Value& b);
Value negate(const Value& v);
Value positive(const Value& v);

// The sandbox's lookups: getattr prefers the attribute (a str/list/dict method, an object's
// attribute) and falls back to the item; getitem prefers the item. Both give an Undefined
// that names what was missing, and an Undefined that raises SecurityError for methods that
// would mutate (list.append, dict.update, ...) or dunder attributes.
Value getattr(const Value& obj, const std::string& name);
Value getitem(const Value& obj, const Value& key);
// Python's getattr(obj, name) alone (no item fallback), as the sandbox allows it: nullopt when
// the object has no such attribute.
std::optional<Value> attribute(const Value& obj, const std::string& name);
// obj[start:stop:step] (each bound optional), as plain Python: TypeError when obj cannot be
// sliced or a bound is not an integer. With `sandboxed` (a slice Jinja folds at compile time,
// which goes through the sandbox's getitem) those are an Undefined instead.
Value getslice(const Value& obj, const std::optional<Value>& start,
               const std::optional<Value>& stop, const std::optional<Value>& step,
               bool sandboxed = false);

// Python's "<type> object" wording for messages ("'dict object' has no attribute 'x'").
std::string object_type_repr(const Value& v);

}  // namespace loraserve::chat::jinja::py
