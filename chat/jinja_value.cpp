#include "chat/jinja_value.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "chat/py_ops.h"

namespace loraserve::chat::jinja {

TemplateError::TemplateError(std::string kind, std::string message, int line)
    : std::runtime_error(kind + ": " + message),
      kind_(std::move(kind)),
      detail_(std::move(message)),
      line_(line) {}

void throw_type_error(std::string message) { throw TemplateError("TypeError", std::move(message)); }

void Budget::charge(uint64_t steps) {
  if (steps > steps_left_) {
    throw TemplateError("LimitError",
                        fmt::format("the template needed more than {} evaluation steps (a loop "
                                    "or recursion too large for one render)",
                                    max_steps_));
  }
  steps_left_ -= steps;
}

void Budget::check_string(size_t bytes) const {
  if (bytes > max_string_bytes_) {
    throw TemplateError("LimitError", fmt::format("the template built a string of more than {} "
                                                  "bytes (the render's size limit)",
                                                  max_string_bytes_));
  }
}

Value Value::undefined(std::string message, std::string exception_kind) {
  Value v;
  v.ptr_ = std::make_shared<const Hint>(Hint{std::move(message), std::move(exception_kind)});
  return v;
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.scalar_.b = b;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.scalar_.i = i;
  return v;
}

Value Value::number(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.scalar_.d = d;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.ptr_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

namespace {

int deepest(const std::vector<Value>& items) {
  int depth = 0;
  for (const Value& item : items) depth = std::max(depth, item.depth());
  return depth;
}

void check_depth(int depth) {
  if (depth > kMaxValueDepth) {
    throw TemplateError("LimitError",
                        fmt::format("a value nests deeper than {} lists or dicts", kMaxValueDepth));
  }
}

}  // namespace

Value Value::list(std::vector<Value> items, SequenceView view) {
  auto seq = std::make_shared<Sequence>();
  seq->depth = 1 + deepest(items);
  check_depth(seq->depth);
  seq->items = std::move(items);
  seq->view = view;
  Value v;
  v.kind_ = Kind::kList;
  v.ptr_ = std::shared_ptr<const Sequence>(std::move(seq));
  return v;
}

Value Value::range(std::vector<Value> items, int64_t start, int64_t stop, int64_t step) {
  auto seq = std::make_shared<Sequence>();
  seq->items = std::move(items);
  seq->view = SequenceView::kRange;
  seq->range[0] = start;
  seq->range[1] = stop;
  seq->range[2] = step;
  Value v;
  v.kind_ = Kind::kList;
  v.ptr_ = std::shared_ptr<const Sequence>(std::move(seq));
  return v;
}

Value Value::tuple(std::vector<Value> items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::kTuple;
  return v;
}

Value Value::dict(std::shared_ptr<const Dict> dict) {
  check_depth(dict->depth());
  Value v;
  v.kind_ = Kind::kDict;
  v.ptr_ = std::move(dict);
  return v;
}

Value Value::generator(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kGenerator;
  v.ptr_ = std::make_shared<GeneratorState>(GeneratorState{std::move(items), 0});
  return v;
}

Value Value::object(std::shared_ptr<Object> object) {
  Value v;
  v.kind_ = Kind::kObject;
  v.ptr_ = std::move(object);
  return v;
}

double Value::as_double() const {
  return kind_ == Kind::kFloat ? scalar_.d : static_cast<double>(as_int());
}

const std::string& Value::str() const {
  return *std::get<std::shared_ptr<const std::string>>(ptr_);
}

const std::string& Value::undefined_message() const {
  static const std::string kEmpty;
  const auto* hint = std::get_if<std::shared_ptr<const Hint>>(&ptr_);
  return hint != nullptr ? (*hint)->message : kEmpty;
}

const std::string& Value::undefined_kind() const {
  static const std::string kUndefinedError = "UndefinedError";
  const auto* hint = std::get_if<std::shared_ptr<const Hint>>(&ptr_);
  return hint != nullptr ? (*hint)->kind : kUndefinedError;
}

const std::vector<Value>& Value::items() const {
  return std::get<std::shared_ptr<const Sequence>>(ptr_)->items;
}

SequenceView Value::view() const { return std::get<std::shared_ptr<const Sequence>>(ptr_)->view; }

const int64_t* Value::range_bounds() const {
  return std::get<std::shared_ptr<const Sequence>>(ptr_)->range;
}

const Dict& Value::dict() const { return *std::get<std::shared_ptr<const Dict>>(ptr_); }

GeneratorState& Value::generator_state() const {
  return *std::get<std::shared_ptr<GeneratorState>>(ptr_);
}

Object& Value::object() const { return *std::get<std::shared_ptr<Object>>(ptr_); }

const std::shared_ptr<Object>& Value::object_ptr() const {
  return std::get<std::shared_ptr<Object>>(ptr_);
}

const void* Value::identity() const {
  return std::visit(
      [](const auto& p) -> const void* {
        if constexpr (std::is_same_v<std::decay_t<decltype(p)>, std::monostate>) {
          return nullptr;
        } else {
          return p.get();
        }
      },
      ptr_);
}

int Value::depth() const {
  switch (kind_) {
    case Kind::kList:
    case Kind::kTuple:
      return std::get<std::shared_ptr<const Sequence>>(ptr_)->depth;
    case Kind::kDict:
      return dict().depth();
    default:
      return 0;
  }
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      switch (view()) {
        case SequenceView::kDictKeys:
          return "dict_keys";
        case SequenceView::kDictValues:
          return "dict_values";
        case SequenceView::kDictItems:
          return "dict_items";
        case SequenceView::kRange:
          return "range";
        case SequenceView::kPlain:
          break;
      }
      return "list";
    case Kind::kTuple:
      return "tuple";
    case Kind::kDict:
      return "dict";
    case Kind::kGenerator:
      return "generator";
    case Kind::kObject:
      return object().type_name();
  }
  return "object";
}

void Dict::set(Value key, Value value) {
  depth_ = std::max(depth_, 1 + std::max(key.depth(), value.depth()));
  if (key.is_string()) {
    auto [it, inserted] = string_index_.try_emplace(key.str(), entries_.size());
    if (inserted) {
      entries_.emplace_back(std::move(key), std::move(value));
    } else {
      entries_[it->second].second = std::move(value);
    }
    return;
  }
  py::check_hashable(key);
  for (auto& entry : entries_) {
    if (!entry.first.is_string() && py::equal(entry.first, key)) {
      entry.second = std::move(value);
      return;
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
}

const Value* Dict::find(std::string_view key) const {
  auto it = string_index_.find(std::string(key));
  return it == string_index_.end() ? nullptr : &entries_[it->second].second;
}

const Value* Dict::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.str()));
  py::check_hashable(key);
  for (const auto& entry : entries_) {
    if (!entry.first.is_string() && py::equal(entry.first, key)) return &entry.second;
  }
  return nullptr;
}

std::optional<Value> Object::getattr(const std::string&) const { return std::nullopt; }

Value Object::call(Interpreter&, CallArgs) {
  throw_type_error(fmt::format("'{}' object is not callable", type_name()));
}

bool Object::set_attribute(const std::string&, Value) { return false; }

std::string Object::repr() const { return fmt::format("<{} object>", type_name()); }

}  // namespace loraserve::chat::jinja
