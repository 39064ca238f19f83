#include "chat/jinja_interpreter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "chat/jinja_builtins.h"
#include "chat/py_ops.h"

namespace loraserve::chat::jinja {
namespace {

// Limits the C++ recursion of evaluation (each nested expression or block is a frame).
constexpr int kMaxEvalDepth = 500;

class DepthGuard {
 public:
  DepthGuard(int* depth, int max, const char* what) : depth_(depth) {
    if (++*depth_ > max) {
      --*depth_;
      throw TemplateError("LimitError", fmt::format("{} nest deeper than {}", what, max));
    }
  }
  ~DepthGuard() { --*depth_; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;

 private:
  int* depth_;
};

// A macro, or the caller of a call block.
class Macro : public Object {
 public:
  Macro(std::string name, const MacroSignature* signature, const Body* body,
        std::shared_ptr<Scope> closure, bool is_caller)
      : name_(std::move(name)),
        signature_(signature),
        body_(body),
        closure_(std::move(closure)),
        is_caller_(is_caller) {}
  std::string type_name() const override { return "Macro"; }
  bool callable() const override { return true; }
  Value call(Interpreter& interpreter, CallArgs args) override {
    return interpreter.invoke_macro(name_, *signature_, *body_, closure_, std::move(args),
                                    is_caller_);
  }
  std::optional<Value> getattr(const std::string& name) const override {
    if (name == "name") return Value::string(name_);
    if (name == "arguments") {
      std::vector<Value> params;
      for (const std::string& p : signature_->params) params.push_back(Value::string(p));
      return Value::tuple(std::move(params));
    }
    if (name == "catch_kwargs") return Value::boolean(signature_->uses_kwargs);
    if (name == "catch_varargs") return Value::boolean(signature_->uses_varargs);
    if (name == "caller") return Value::boolean(signature_->uses_caller);
    return std::nullopt;
  }
  std::string repr() const override { return fmt::format("<Macro '{}'>", name_); }

 private:
  std::string name_;
  const MacroSignature* signature_;
  const Body* body_;
  std::shared_ptr<Scope> closure_;
  bool is_caller_;
};

// Jinja's LoopContext: the `loop` variable of a for loop.
class LoopContext : public Object, public std::enable_shared_from_this<LoopContext> {
 public:
  LoopContext(const ForNode* node, std::shared_ptr<Scope> scope, std::vector<Value> items,
              int depth)
      : node_(node), scope_(std::move(scope)), items_(std::move(items)), depth_(depth) {}

  void set_index(size_t index) { index0_ = index; }

  std::string type_name() const override { return "LoopContext"; }
  bool callable() const override { return true; }
  Value call(Interpreter& interpreter, CallArgs args) override {
    if (!node_->recursive) {
      throw_type_error("The loop must have the 'recursive' marker to be called recursively.");
    }
    if (args.positional.size() != 1 || !args.keyword.empty()) {
      throw_type_error("loop() takes exactly one argument, the items to recurse into");
    }
    return Value::string(
        interpreter.render_loop(*node_, scope_, py::iterate(args.positional[0]), depth_ + 1));
  }

  std::optional<Value> getattr(const std::string& name) const override {
    const auto length = static_cast<int64_t>(items_.size());
    const auto index0 = static_cast<int64_t>(index0_);
    if (name == "index0") return Value::integer(index0);
    if (name == "index") return Value::integer(index0 + 1);
    if (name == "revindex") return Value::integer(length - index0);
    if (name == "revindex0") return Value::integer(length - index0 - 1);
    if (name == "first") return Value::boolean(index0 == 0);
    if (name == "last") return Value::boolean(index0 == length - 1);
    if (name == "length") return Value::integer(length);
    if (name == "depth") return Value::integer(depth_);
    if (name == "depth0") return Value::integer(depth_ - 1);
    if (name == "previtem") {
      if (index0_ == 0) return Value::undefined("there is no previous item");
      return items_[index0_ - 1];
    }
    if (name == "nextitem") {
      if (index0_ + 1 >= items_.size()) return Value::undefined("there is no next item");
      return items_[index0_ + 1];
    }
    if (name == "cycle" || name == "changed") {
      auto self = std::const_pointer_cast<LoopContext>(shared_from_this());
      return Value::object(std::make_shared<LoopMethod>(std::move(self), name == "cycle"));
    }
    return std::nullopt;
  }

  std::string repr() const override {
    return fmt::format("<LoopContext {}/{}>", index0_ + 1, items_.size());
  }

 private:
  // loop.cycle and loop.changed, bound to their loop.
  class LoopMethod : public Object {
   public:
    LoopMethod(std::shared_ptr<LoopContext> loop, bool cycle)
        : loop_(std::move(loop)), cycle_(cycle) {}
    std::string type_name() const override { return "method"; }
    bool callable() const override { return true; }
    Value call(Interpreter&, CallArgs args) override {
      if (!args.keyword.empty()) {
        throw_type_error(fmt::format("{}() got an unexpected keyword argument '{}'",
                                     cycle_ ? "cycle" : "changed", args.keyword[0].first));
      }
      if (cycle_) {
        if (args.positional.empty()) throw_type_error("no items for cycling given");
        return args.positional[loop_->index0_ % args.positional.size()];
      }
      Value now = Value::tuple(std::move(args.positional));
      if (loop_->has_changed_value_ && py::equal(loop_->last_changed_value_, now)) {
        return Value::boolean(false);
      }
      loop_->last_changed_value_ = std::move(now);
      loop_->has_changed_value_ = true;
      return Value::boolean(true);
    }

   private:
    std::shared_ptr<LoopContext> loop_;
    bool cycle_;
  };

  const ForNode* node_;
  std::shared_ptr<Scope> scope_;
  std::vector<Value> items_;
  int depth_;
  size_t index0_ = 0;
  Value last_changed_value_;
  bool has_changed_value_ = false;
};

py::CompareOp compare_op(CompareNode::Op op) {
  switch (op) {
    case CompareNode::Op::kLt:
      return py::CompareOp::kLess;
    case CompareNode::Op::kLe:
      return py::CompareOp::kLessEqual;
    case CompareNode::Op::kGt:
      return py::CompareOp::kGreater;
    default:
      return py::CompareOp::kGreaterEqual;
  }
}

// Thrown while evaluating for constant_value() at what Jinja cannot fold.
struct NotConstant {};

bool needs_context(const std::string& filter) {
  return filter == "map" || filter == "select" || filter == "reject" || filter == "selectattr" ||
         filter == "rejectattr";
}

// Python values Jinja's optimizer may turn back into a literal (nodes.py has_safe_repr).
bool has_safe_repr(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNone:
    case Value::Kind::kBool:
    case Value::Kind::kInt:
    case Value::Kind::kFloat:
    case Value::Kind::kString:
      return true;
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      if (v.view() != SequenceView::kPlain) return false;
      return std::all_of(v.items().begin(), v.items().end(), has_safe_repr);
    case Value::Kind::kDict:
      return std::all_of(v.dict().entries().begin(), v.dict().entries().end(), [](const auto& e) {
        return has_safe_repr(e.first) && has_safe_repr(e.second);
      });
    default:
      return false;
  }
}

void mark_all_slices(Node& node) {
  for_each_child(node, mark_all_slices);
  if (node.kind == Node::Kind::kGetitem &&
      static_cast<GetitemNode&>(node).key->kind == Node::Kind::kSlice) {
    static_cast<GetitemNode&>(node).constant_slice = true;
  }
}

bool has_slice(Node& node) {
  if (node.kind == Node::Kind::kSlice) return true;
  bool found = false;
  for_each_child(node, [&found](Node& child) { found = found || has_slice(child); });
  return found;
}

// All the constant folding one parse may do (evaluation steps); past it nothing more is folded.
constexpr uint64_t kFoldingSteps = 2'000'000;
constexpr uint64_t kFoldingStepsPerExpression = 100'000;

// Jinja folds an expression at compile time when Node.as_const computes it and its value can be
// written back as a literal; an expression printed by {{ }} whatever its value. Folding changes
// what two things do, so only they are looked at: a slice inside a folded expression went
// through the sandbox's getitem, and a folded negative base of ** lost its parentheses.
class Folding {
 public:
  void mark(Node& node, bool printed) {
    if (node.kind == Node::Kind::kOutput) {
      for (NodePtr& item : static_cast<OutputNode&>(node).items) mark(*item, true);
      return;
    }
    if (node.kind < Node::Kind::kOutput && node.kind != Node::Kind::kConst &&
        node.kind != Node::Kind::kTemplateData && node.kind != Node::Kind::kSlice &&
        has_slice(node)) {
      const std::optional<Value> value = value_of(node);
      if (value && (printed || has_safe_repr(*value))) {
        mark_all_slices(node);
        return;
      }
    }
    if (node.kind == Node::Kind::kBinary &&
        static_cast<BinaryNode&>(node).op == static_cast<int>(py::BinaryOp::kPow)) {
      // Only when the power itself is not folded (then Python computes it from the values).
      auto& pow = static_cast<BinaryNode&>(node);
      if (!value_of(pow)) {
        const std::optional<Value> base = value_of(*pow.left);
        pow.negative_literal_base =
            base && base->is_number() && !base->is_bool() && std::signbit(base->as_double());
      }
    }
    for_each_child(node, [this](Node& child) { mark(child, false); });
  }

 private:
  std::optional<Value> value_of(const Node& node) {
    if (steps_left_ == 0) return std::nullopt;
    uint64_t used = 0;
    std::optional<Value> value =
        Interpreter::constant_value(node, std::min(steps_left_, kFoldingStepsPerExpression), &used);
    steps_left_ -= std::min(steps_left_, used);
    return value;
  }

  uint64_t steps_left_ = kFoldingSteps;
};

}  // namespace

void mark_constant_slices(TemplateAst& ast) {
  Folding folding;
  for (NodePtr& node : ast.body) folding.mark(*node, false);
}

std::optional<Value> Interpreter::constant_value(const Node& node, uint64_t max_steps,
                                                 uint64_t* used_steps) {
  RenderLimits limits;
  limits.max_steps = max_steps;
  limits.max_string_bytes = 1u << 20;
  Interpreter folder(limits);
  folder.constant_only_ = true;
  py::BudgetScope budget_scope(&folder.budget_);
  std::optional<Value> value;
  try {
    value = folder.eval(node, folder.new_scope(folder.globals_));
  } catch (const NotConstant&) {
  } catch (const TemplateError&) {
  }
  *used_steps = folder.budget_.used();
  return value;
}

const Value* Scope::find(const std::string& name) const {
  for (const auto& [key, value] : vars) {
    if (key == name) return &value;
  }
  return nullptr;
}

void Scope::set(const std::string& name, Value value) {
  for (auto& [key, existing] : vars) {
    if (key == name) {
      existing = std::move(value);
      return;
    }
  }
  vars.emplace_back(name, std::move(value));
}

Interpreter::Interpreter(const RenderLimits& limits)
    : budget_(limits.max_steps, limits.max_string_bytes),
      max_call_depth_(limits.max_call_depth),
      globals_(std::make_shared<Scope>(nullptr)) {
  globals_->vars = global_functions();
  scopes_.push_back(globals_);
}

Interpreter::~Interpreter() {
  // Hold every live scope first: emptying one may free others.
  std::vector<std::shared_ptr<Scope>> live;
  for (const std::weak_ptr<Scope>& w : scopes_) {
    if (std::shared_ptr<Scope> scope = w.lock()) live.push_back(std::move(scope));
  }
  for (const std::shared_ptr<Scope>& scope : live) {
    scope->vars.clear();
    scope->parent.reset();
  }
}

std::shared_ptr<Scope> Interpreter::new_scope(std::shared_ptr<Scope> parent) {
  if (scopes_.size() >= prune_at_) {
    std::erase_if(scopes_, [](const std::weak_ptr<Scope>& w) { return w.expired(); });
    prune_at_ = std::max<size_t>(256, 2 * scopes_.size());
  }
  // Not make_shared: a weak_ptr would keep a make_shared object's memory until it is pruned.
  std::shared_ptr<Scope> scope(new Scope(std::move(parent)));
  scopes_.push_back(scope);
  return scope;
}

std::string Interpreter::render(const TemplateAst& ast,
                                std::vector<std::pair<std::string, Value>> variables) {
  py::BudgetScope budget_scope(&budget_);
  auto context = new_scope(globals_);
  context->vars = std::move(variables);
  auto root = new_scope(context);
  std::string out;
  exec(ast.body, root, out);
  return out;
}

Value Interpreter::lookup(const std::string& name, const std::shared_ptr<Scope>& scope) const {
  if (constant_only_) throw NotConstant();
  for (const Scope* s = scope.get(); s != nullptr; s = s->parent.get()) {
    if (const Value* v = s->find(name)) return *v;
  }
  return Value::undefined(fmt::format("'{}' is undefined", name));
}

void Interpreter::append_output(std::string& out, const Value& value) {
  py::append_str(out, value);
  budget_.check_string(out.size());
}

Interpreter::Flow Interpreter::exec(const Body& body, const std::shared_ptr<Scope>& scope,
                                    std::string& out) {
  for (const NodePtr& node : body) {
    const Flow flow = exec_node(*node, scope, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec_node(const Node& node, const std::shared_ptr<Scope>& scope,
                                         std::string& out) {
  DepthGuard depth(&eval_depth_, kMaxEvalDepth, "template blocks and expressions");
  budget_.charge(1);
  try {
    switch (node.kind) {
      case Node::Kind::kOutput:
        for (const NodePtr& item : as<OutputNode>(node).items) {
          if (item->kind == Node::Kind::kTemplateData) {
            out += as<ConstNode>(*item).value.str();
            budget_.check_string(out.size());
          } else {
            append_output(out, eval(*item, scope));
          }
        }
        return Flow::kNormal;
      case Node::Kind::kFor:
        exec_for(as<ForNode>(node), scope, out);
        return Flow::kNormal;
      case Node::Kind::kIf: {
        const auto& n = as<IfNode>(node);
        for (const auto& [test, body] : n.branches) {
          if (py::truthy(eval(*test, scope))) return exec(body, scope, out);
        }
        return exec(n.else_body, scope, out);
      }
      case Node::Kind::kAssign: {
        const auto& n = as<AssignNode>(node);
        exec_assign(*n.target, eval(*n.value, scope), scope);
        return Flow::kNormal;
      }
      case Node::Kind::kAssignBlock: {
        const auto& n = as<AssignBlockNode>(node);
        auto inner = new_scope(scope);
        std::string text;
        const Flow flow = exec(n.body, inner, text);
        if (flow != Flow::kNormal) return flow;
        const Value block = Value::string(std::move(text));
        exec_assign(*n.target,
                    n.filter ? eval_filter(as<FilterNode>(*n.filter), scope, &block) : block,
                    scope);
        return Flow::kNormal;
      }
      case Node::Kind::kMacro: {
        const auto& n = as<MacroNode>(node);
        scope->set(n.name, Value::object(std::make_shared<Macro>(n.name, &n.signature, &n.body,
                                                                 scope, false)));
        return Flow::kNormal;
      }
      case Node::Kind::kCallBlock:
        exec_call_block(as<CallBlockNode>(node), scope, out);
        return Flow::kNormal;
      case Node::Kind::kFilterBlock: {
        const auto& n = as<FilterBlockNode>(node);
        auto inner = new_scope(scope);
        std::string text;
        const Flow flow = exec(n.body, inner, text);
        if (flow != Flow::kNormal) return flow;
        const Value block = Value::string(std::move(text));
        append_output(out, eval_filter(as<FilterNode>(*n.filter), scope, &block));
        return Flow::kNormal;
      }
      case Node::Kind::kWith: {
        const auto& n = as<WithNode>(node);
        auto inner = new_scope(scope);
        for (const auto& [target, value] : n.assignments) {
          exec_assign(*target, eval(*value, scope), inner);
        }
        return exec(n.body, inner, out);
      }
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
      default:
        throw TemplateError("TemplateSyntaxError", "an expression where a statement belongs");
    }
  } catch (TemplateError& e) {
    if (e.line() == 0) e.set_line(node.line);
    throw;
  }
}

void Interpreter::exec_assign(const Node& target, Value value,
                              const std::shared_ptr<Scope>& scope) {
  switch (target.kind) {
    case Node::Kind::kName:
      scope->set(as<NameNode>(target).name, std::move(value));
      return;
    case Node::Kind::kTuple: {
      const auto& targets = as<SequenceNode>(target).items;
      std::vector<Value> items = py::iterate(value);
      if (items.size() > targets.size()) {
        throw TemplateError("ValueError",
                            fmt::format("too many values to unpack (expected {})", targets.size()));
      }
      if (items.size() < targets.size()) {
        throw TemplateError("ValueError",
                            fmt::format("not enough values to unpack (expected {}, got {})",
                                        targets.size(), items.size()));
      }
      for (size_t i = 0; i < targets.size(); ++i) exec_assign(*targets[i], items[i], scope);
      return;
    }
    case Node::Kind::kNamespaceRef: {
      const auto& ref = as<NamespaceRefNode>(target);
      const Value ns = lookup(ref.name, scope);
      if (!ns.is_object() || !ns.object().set_attribute(ref.attribute, std::move(value))) {
        throw TemplateError("TemplateRuntimeError",
                            "cannot assign attribute on non-namespace object");
      }
      return;
    }
    default:
      throw TemplateError("TemplateSyntaxError", "can't assign to this expression");
  }
}

void Interpreter::exec_for(const ForNode& node, const std::shared_ptr<Scope>& scope,
                           std::string& out) {
  std::vector<Value> items = py::iterate(eval(*node.iterable, scope));
  run_loop(node, scope, std::move(items), 1, out);
}

void Interpreter::run_loop(const ForNode& node, const std::shared_ptr<Scope>& scope,
                           std::vector<Value> items, int depth, std::string& out) {
  if (node.filter) {
    std::vector<Value> kept;
    for (Value& item : items) {
      budget_.charge(1);
      auto probe = new_scope(scope);
      exec_assign(*node.target, item, probe);
      if (py::truthy(eval(*node.filter, probe))) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    exec(node.else_body, new_scope(scope), out);
    return;
  }
  const size_t n = items.size();
  auto loop = std::make_shared<LoopContext>(&node, scope, items, depth);
  const Value loop_value = Value::object(loop);
  for (size_t i = 0; i < n; ++i) {
    budget_.charge(1);
    loop->set_index(i);
    auto iteration = new_scope(scope);
    exec_assign(*node.target, items[i], iteration);
    iteration->set("loop", loop_value);
    if (exec(node.body, iteration, out) == Flow::kBreak) break;
  }
}

std::string Interpreter::render_loop(const ForNode& node, const std::shared_ptr<Scope>& scope,
                                     std::vector<Value> items, int depth) {
  DepthGuard calls(&call_depth_, max_call_depth_, "macro and recursive loop calls");
  std::string out;
  run_loop(node, scope, std::move(items), depth, out);
  return out;
}

void Interpreter::exec_call_block(const CallBlockNode& node, const std::shared_ptr<Scope>& scope,
                                  std::string& out) {
  const Value caller =
      Value::object(std::make_shared<Macro>("caller", &node.signature, &node.body, scope, true));
  if (!node.call) {
    append_output(out, call(caller, {}));
    return;
  }
  const auto& call_node = as<CallNode>(*node.call);
  const Value callee = eval(*call_node.callee, scope);
  CallArgs args = eval_args(call_node.args, scope);
  args.keyword.emplace_back("caller", caller);
  append_output(out, call(callee, std::move(args)));
}

Value Interpreter::invoke_macro(const std::string& name, const MacroSignature& signature,
                                const Body& body, const std::shared_ptr<Scope>& closure,
                                CallArgs args, bool is_caller) {
  DepthGuard calls(&call_depth_, max_call_depth_, "macro and recursive loop calls");
  auto scope = new_scope(closure);
  const auto& params = signature.params;
  const size_t first_default = params.size() - signature.defaults.size();
  const size_t given = std::min(params.size(), args.positional.size());
  for (size_t i = 0; i < given; ++i) scope->set(params[i], args.positional[i]);
  auto take_keyword = [&args](const std::string& key) -> std::optional<Value> {
    auto it = std::find_if(args.keyword.begin(), args.keyword.end(),
                           [&](const auto& kw) { return kw.first == key; });
    if (it == args.keyword.end()) return std::nullopt;
    Value v = std::move(it->second);
    args.keyword.erase(it);
    return v;
  };
  const bool explicit_caller = std::find(params.begin(), params.end(), "caller") != params.end();
  for (size_t i = given; i < params.size(); ++i) {
    if (std::optional<Value> v = take_keyword(params[i])) {
      scope->set(params[i], *std::move(v));
    } else if (i >= first_default) {
      scope->set(params[i], eval(*signature.defaults[i - first_default], scope));
    } else {
      scope->set(params[i],
                 Value::undefined(fmt::format("parameter '{}' was not provided", params[i])));
    }
  }
  if (signature.uses_caller && !explicit_caller) {
    std::optional<Value> caller = take_keyword("caller");
    scope->set("caller", caller ? *std::move(caller) : Value::undefined("No caller defined"));
  }
  if (signature.uses_kwargs) {
    auto kwargs = std::make_shared<Dict>();
    for (auto& [key, value] : args.keyword) kwargs->set(Value::string(key), std::move(value));
    scope->set("kwargs", Value::dict(std::move(kwargs)));
  } else if (!args.keyword.empty()) {
    if (std::any_of(args.keyword.begin(), args.keyword.end(),
                    [](const auto& kw) { return kw.first == "caller"; })) {
      throw_type_error(
          fmt::format("macro '{}' was invoked with two values for the special "
                      "caller argument. This is most likely a bug.",
                      name));
    }
    throw_type_error(
        fmt::format("macro '{}' takes no keyword argument '{}'", name, args.keyword[0].first));
  }
  if (signature.uses_varargs) {
    std::vector<Value> extra;
    if (args.positional.size() > params.size()) {
      extra.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(params.size()),
                   args.positional.end());
    }
    scope->set("varargs", Value::tuple(std::move(extra)));
  } else if (args.positional.size() > params.size()) {
    throw_type_error(
        fmt::format("macro '{}' takes not more than {} argument(s)", name, params.size()));
  }
  (void)is_caller;
  std::string out;
  exec(body, scope, out);
  return Value::string(std::move(out));
}

Value Interpreter::call(const Value& callee, CallArgs args) {
  if (callee.is_undefined()) py::fail_undefined(callee);
  if (callee.is_object() && callee.object().callable()) {
    // Hold the object: a call may replace the variable that held it.
    const std::shared_ptr<Object> object = callee.object_ptr();
    return object->call(*this, std::move(args));
  }
  throw_type_error(fmt::format("'{}' object is not callable", callee.type_name()));
}

Value Interpreter::apply_filter(const std::string& name, const Value& value, CallArgs args) {
  const FilterFn fn = find_filter(name);
  if (fn == nullptr) throw TemplateError("TemplateRuntimeError", unknown_filter_message(name));
  return fn(*this, value, args);
}

bool Interpreter::apply_test(const std::string& name, const Value& value, CallArgs args) {
  const TestFn fn = find_test(name);
  if (fn == nullptr) throw TemplateError("TemplateRuntimeError", unknown_test_message(name));
  return fn(*this, value, args);
}

CallArgs Interpreter::eval_args(const CallArguments& args, const std::shared_ptr<Scope>& scope) {
  CallArgs out;
  for (const NodePtr& arg : args.positional) out.positional.push_back(eval(*arg, scope));
  if (args.star_args) {
    for (Value& v : py::iterate(eval(*args.star_args, scope)))
      out.positional.push_back(std::move(v));
  }
  for (const auto& [key, arg] : args.keyword) out.keyword.emplace_back(key, eval(*arg, scope));
  if (args.star_kwargs) {
    const Value mapping = eval(*args.star_kwargs, scope);
    if (!mapping.is_dict()) {
      throw_type_error(
          fmt::format("argument after ** must be a mapping, not {}", mapping.type_name()));
    }
    for (const auto& [key, value] : mapping.dict().entries()) {
      if (!key.is_string()) throw_type_error("keywords must be strings");
      out.keyword.emplace_back(key.str(), value);
    }
  }
  return out;
}

Value Interpreter::eval_filter(const FilterNode& node, const std::shared_ptr<Scope>& scope,
                               const Value* block_output) {
  if (constant_only_ && (!node.operand || needs_context(node.name))) throw NotConstant();
  // A filter chain of a filter or set block ends in the block's output instead of an operand.
  Value operand;
  if (!node.operand) {
    operand = *block_output;
  } else if (node.operand->kind == Node::Kind::kFilter && block_output != nullptr) {
    operand = eval_filter(as<FilterNode>(*node.operand), scope, block_output);
  } else {
    operand = eval(*node.operand, scope);
  }
  CallArgs args = eval_args(node.args, scope);
  try {
    return node.fn(*this, operand, args);
  } catch (TemplateError& e) {
    if (e.line() == 0) e.set_line(node.line);
    throw;
  }
}

Value Interpreter::eval_compare(const CompareNode& node, const std::shared_ptr<Scope>& scope) {
  Value left = eval(*node.first, scope);
  for (const auto& [op, operand] : node.rest) {
    Value right = eval(*operand, scope);
    bool result;
    switch (op) {
      case CompareNode::Op::kEq:
        result = py::equal(left, right);
        break;
      case CompareNode::Op::kNe:
        result = !py::equal(left, right);
        break;
      case CompareNode::Op::kIn:
        result = py::contains(right, left);
        break;
      case CompareNode::Op::kNotIn:
        result = !py::contains(right, left);
        break;
      default:
        result = py::compare(left, right, compare_op(op));
        break;
    }
    if (!result) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

Value Interpreter::eval(const Node& node, const std::shared_ptr<Scope>& scope) {
  DepthGuard depth(&eval_depth_, kMaxEvalDepth, "template blocks and expressions");
  budget_.charge(1);
  try {
    return eval_inner(node, scope);
  } catch (TemplateError& e) {
    if (e.line() == 0) e.set_line(node.line);
    throw;
  }
}

Value Interpreter::eval_inner(const Node& node, const std::shared_ptr<Scope>& scope) {
  switch (node.kind) {
    case Node::Kind::kConst:
    case Node::Kind::kTemplateData:
      return as<ConstNode>(node).value;
    case Node::Kind::kName:
      return lookup(as<NameNode>(node).name, scope);
    case Node::Kind::kTuple:
    case Node::Kind::kList: {
      std::vector<Value> items;
      for (const NodePtr& item : as<SequenceNode>(node).items) items.push_back(eval(*item, scope));
      return node.kind == Node::Kind::kTuple ? Value::tuple(std::move(items))
                                             : Value::list(std::move(items));
    }
    case Node::Kind::kDict: {
      auto dict = std::make_shared<Dict>();
      for (const auto& [key, value] : as<DictNode>(node).pairs) {
        Value k = eval(*key, scope);
        dict->set(std::move(k), eval(*value, scope));
      }
      return Value::dict(std::move(dict));
    }
    case Node::Kind::kGetattr: {
      const auto& n = as<GetattrNode>(node);
      return py::getattr(eval(*n.object, scope), n.attribute);
    }
    case Node::Kind::kGetitem: {
      const auto& n = as<GetitemNode>(node);
      const Value object = eval(*n.object, scope);
      if (n.key->kind == Node::Kind::kSlice) {
        const auto& s = as<SliceNode>(*n.key);
        auto part = [&](const NodePtr& p) -> std::optional<Value> {
          if (!p) return std::nullopt;
          return eval(*p, scope);
        };
        const std::optional<Value> start = part(s.start);
        const std::optional<Value> stop = part(s.stop);
        const std::optional<Value> step = part(s.step);
        return py::getslice(object, start, stop, step, n.constant_slice || constant_only_);
      }
      return py::getitem(object, eval(*n.key, scope));
    }
    case Node::Kind::kSlice:
      return Value::undefined("slice objects can only be used as subscripts");
    case Node::Kind::kCall: {
      if (constant_only_) throw NotConstant();
      const auto& n = as<CallNode>(node);
      const Value callee = eval(*n.callee, scope);
      return call(callee, eval_args(n.args, scope));
    }
    case Node::Kind::kFilter:
      return eval_filter(as<FilterNode>(node), scope, nullptr);
    case Node::Kind::kTest: {
      const auto& n = as<TestNode>(node);
      const Value operand = eval(*n.operand, scope);
      CallArgs args = eval_args(n.args, scope);
      return Value::boolean(n.fn(*this, operand, args));
    }
    case Node::Kind::kCondExpr: {
      const auto& n = as<CondExprNode>(node);
      if (py::truthy(eval(*n.test, scope))) return eval(*n.then, scope);
      if (n.otherwise) return eval(*n.otherwise, scope);
      return Value::undefined(
          fmt::format("the inline if-expression on line {} evaluated to false "
                      "and no else section was defined.",
                      node.line));
    }
    case Node::Kind::kAnd: {
      const auto& n = as<LogicNode>(node);
      Value left = eval(*n.left, scope);
      return py::truthy(left) ? eval(*n.right, scope) : left;
    }
    case Node::Kind::kOr: {
      const auto& n = as<LogicNode>(node);
      Value left = eval(*n.left, scope);
      return py::truthy(left) ? left : eval(*n.right, scope);
    }
    case Node::Kind::kNot:
      return Value::boolean(!py::truthy(eval(*as<LogicNode>(node).left, scope)));
    case Node::Kind::kNeg:
      return py::negate(eval(*as<LogicNode>(node).left, scope));
    case Node::Kind::kPos:
      return py::positive(eval(*as<LogicNode>(node).left, scope));
    case Node::Kind::kBinary: {
      const auto& n = as<BinaryNode>(node);
      const Value left = eval(*n.left, scope);
      const Value right = eval(*n.right, scope);
      if (n.negative_literal_base) {
        return py::negate(py::binary(py::BinaryOp::kPow, py::negate(left), right));
      }
      return py::binary(static_cast<py::BinaryOp>(n.op), left, right);
    }
    case Node::Kind::kConcat: {
      std::string out;
      for (const NodePtr& part : as<ConcatNode>(node).parts) {
        py::append_str(out, eval(*part, scope));
        budget_.check_string(out.size());
      }
      return Value::string(std::move(out));
    }
    case Node::Kind::kCompare:
      return eval_compare(as<CompareNode>(node), scope);
    default:
      throw TemplateError("TemplateSyntaxError", "a statement where an expression belongs");
  }
}

}  // namespace loraserve::chat::jinja
