// Renders a parsed template: Jinja2's runtime semantics (scopes — a fresh one per loop
// iteration, macro call, with/filter/set/call block — loop contexts, macros with defaults,
// varargs, kwargs and caller, namespaces, break/continue) over the values of jinja_value.h.
// One Interpreter renders once; it charges every step, string and call to its Budget so that
// a hostile template or input ends in a LimitError instead of a hang, a crash or unbounded
// memory.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_ast.h"
#include "chat/jinja_value.h"
#include "chat/render_limits.h"

namespace loraserve::chat::jinja {

using RenderLimits = chat::RenderLimits;

// Variables visible to one part of a template; each scope sees its parents'.
struct Scope {
  explicit Scope(std::shared_ptr<Scope> p) : parent(std::move(p)) {}
  const Value* find(const std::string& name) const;
  void set(const std::string& name, Value value);

  std::shared_ptr<Scope> parent;
  std::vector<std::pair<std::string, Value>> vars;
};

// Marks the slices of `ast` whose object and bounds Jinja folds at compile time
// (GetitemNode::constant_slice). Part of parsing.
void mark_constant_slices(TemplateAst& ast);

class Interpreter {
 public:
  explicit Interpreter(const RenderLimits& limits);
  // Breaks the reference cycles a render leaves (a macro holds the scope it was defined in,
  // which holds the macro; a namespace may hold itself through a scope): every scope the render
  // made that is still alive is emptied, so its values and the scopes they hold are freed.
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  // Renders `ast` with `variables` as the template's context (over the globals). Throws
  // TemplateError.
  std::string render(const TemplateAst& ast, std::vector<std::pair<std::string, Value>> variables);

  // Calls any callable value (macro, builtin, method, loop).
  Value call(const Value& callee, CallArgs args);
  // Applies a filter or test by name (for map/select/reject); TemplateError when unknown.
  Value apply_filter(const std::string& name, const Value& value, CallArgs args);
  bool apply_test(const std::string& name, const Value& value, CallArgs args);

  Budget& budget() { return budget_; }

  // What Jinja's compile-time folding (Node.as_const) computes for `node`, or nullopt when it
  // cannot (a name, a call, a filter that needs the context, an error, more than `max_steps`).
  // Sets *used_steps to the steps it took.
  static std::optional<Value> constant_value(const Node& node, uint64_t max_steps,
                                             uint64_t* used_steps);

  // Runs a macro's (or caller's) body with `args` bound to its signature, in a new scope under
  // `closure`; returns what it printed.
  Value invoke_macro(const std::string& name, const MacroSignature& signature, const Body& body,
                     const std::shared_ptr<Scope>& closure, CallArgs args, bool is_caller);
  // Renders a recursive loop's body over `items` at `depth` (loop(...) inside the loop).
  std::string render_loop(const ForNode& node, const std::shared_ptr<Scope>& scope,
                          std::vector<Value> items, int depth);

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow exec(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out);
  Flow exec_node(const Node& node, const std::shared_ptr<Scope>& scope, std::string& out);
  void exec_for(const ForNode& node, const std::shared_ptr<Scope>& scope, std::string& out);
  void run_loop(const ForNode& node, const std::shared_ptr<Scope>& scope, std::vector<Value> items,
                int depth, std::string& out);
  void exec_assign(const Node& target, Value value, const std::shared_ptr<Scope>& scope);
  void exec_call_block(const CallBlockNode& node, const std::shared_ptr<Scope>& scope,
                       std::string& out);

  Value eval(const Node& node, const std::shared_ptr<Scope>& scope);
  Value eval_inner(const Node& node, const std::shared_ptr<Scope>& scope);
  CallArgs eval_args(const CallArguments& args, const std::shared_ptr<Scope>& scope);
  Value eval_filter(const FilterNode& node, const std::shared_ptr<Scope>& scope,
                    const Value* block_output);
  Value eval_compare(const CompareNode& node, const std::shared_ptr<Scope>& scope);
  Value lookup(const std::string& name, const std::shared_ptr<Scope>& scope) const;
  void append_output(std::string& out, const Value& value);
  // A new scope under `parent`, remembered so that the destructor can empty it.
  std::shared_ptr<Scope> new_scope(std::shared_ptr<Scope> parent);

  Budget budget_;
  int max_call_depth_;
  int call_depth_ = 0;
  int eval_depth_ = 0;
  bool constant_only_ = false;  // evaluating for constant_value(): no names, no calls
  std::shared_ptr<Scope> globals_;
  std::vector<std::weak_ptr<Scope>> scopes_;  // every scope made (expired ones pruned)
  size_t prune_at_ = 256;                     // prune when scopes_ reaches this size
};

}  // namespace loraserve::chat::jinja
