// The syntax tree the parser builds and the interpreter walks: Jinja2's node types
// (jinja2/nodes.py) that chat templates can use. Immutable after parsing, so one parsed template
// renders on many threads at once.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_value.h"

namespace loraserve::chat::jinja {

class Interpreter;

// A filter as the interpreter calls it: `value | name(args)`.
using FilterFn = Value (*)(Interpreter& interpreter, const Value& value, CallArgs& args);
// A test as the interpreter calls it: `value is name(args)`.
using TestFn = bool (*)(Interpreter& interpreter, const Value& value, CallArgs& args);

struct Node {
  enum class Kind {
    // expressions
    kConst,
    kTemplateData,
    kName,
    kTuple,
    kList,
    kDict,
    kGetattr,
    kGetitem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kCondExpr,
    kAnd,
    kOr,
    kNot,
    kNeg,
    kPos,
    kBinary,
    kConcat,
    kCompare,
    kNamespaceRef,
    // statements
    kOutput,
    kFor,
    kIf,
    kAssign,
    kAssignBlock,
    kMacro,
    kCallBlock,
    kFilterBlock,
    kWith,
    kBreak,
    kContinue,
  };
  Node(Kind k, int l) : kind(k), line(l) {}
  virtual ~Node() = default;
  Kind kind;
  int line;
};
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

template <typename T>
const T& as(const Node& node) {
  return static_cast<const T&>(node);
}

// A constant (literal), or template text when kind is kTemplateData.
struct ConstNode : Node {
  ConstNode(Kind k, int l, Value v) : Node(k, l), value(std::move(v)) {}
  Value value;
};

struct NameNode : Node {
  NameNode(int l, std::string n) : Node(Kind::kName, l), name(std::move(n)) {}
  std::string name;
};

// A tuple or list literal (kind says which), or a tuple of assignment targets.
struct SequenceNode : Node {
  using Node::Node;
  Body items;
};

struct DictNode : Node {
  explicit DictNode(int l) : Node(Kind::kDict, l) {}
  std::vector<std::pair<NodePtr, NodePtr>> pairs;
};

struct GetattrNode : Node {
  GetattrNode(int l, NodePtr o, std::string a)
      : Node(Kind::kGetattr, l), object(std::move(o)), attribute(std::move(a)) {}
  NodePtr object;
  std::string attribute;
};

struct GetitemNode : Node {
  GetitemNode(int l, NodePtr o, NodePtr k)
      : Node(Kind::kGetitem, l), object(std::move(o)), key(std::move(k)) {}
  NodePtr object;
  NodePtr key;  // may be a SliceNode
  // A slice of an expression Jinja folds at compile time (literals only): it goes through the
  // sandbox's getitem, so what cannot be sliced is Undefined rather than a TypeError.
  bool constant_slice = false;
};

struct SliceNode : Node {
  explicit SliceNode(int l) : Node(Kind::kSlice, l) {}
  NodePtr start, stop, step;  // each may be null
};

struct CallArguments {
  Body positional;
  std::vector<std::pair<std::string, NodePtr>> keyword;
  NodePtr star_args;    // *args
  NodePtr star_kwargs;  // **kwargs
};

struct CallNode : Node {
  CallNode(int l, NodePtr c) : Node(Kind::kCall, l), callee(std::move(c)) {}
  NodePtr callee;
  CallArguments args;
};

// `operand | name(args)`; operand is null for the filter of a filter block or `set` block,
// which applies to the block's output.
struct FilterNode : Node {
  FilterNode(int l, NodePtr o, std::string n, FilterFn f)
      : Node(Kind::kFilter, l), operand(std::move(o)), name(std::move(n)), fn(f) {}
  NodePtr operand;
  std::string name;
  FilterFn fn;
  CallArguments args;
};

struct TestNode : Node {
  TestNode(int l, NodePtr o, std::string n, TestFn f)
      : Node(Kind::kTest, l), operand(std::move(o)), name(std::move(n)), fn(f) {}
  NodePtr operand;
  std::string name;
  TestFn fn;
  CallArguments args;
};

struct CondExprNode : Node {
  explicit CondExprNode(int l) : Node(Kind::kCondExpr, l) {}
  NodePtr test, then, otherwise;  // otherwise may be null
};

// and, or, not, unary -, unary +: one or two operands.
struct LogicNode : Node {
  LogicNode(Kind k, int l, NodePtr a, NodePtr b = nullptr)
      : Node(k, l), left(std::move(a)), right(std::move(b)) {}
  NodePtr left, right;
};

struct BinaryNode : Node {
  BinaryNode(int l, int o, NodePtr a, NodePtr b)
      : Node(Kind::kBinary, l), op(o), left(std::move(a)), right(std::move(b)) {}
  int op;  // a py::BinaryOp
  NodePtr left, right;
  // `c ** x` where Jinja folds c to a negative number and writes it into the Python it compiles
  // without parentheses: Python then computes -(|c| ** x). Jinja's result, so ours.
  bool negative_literal_base = false;
};

struct ConcatNode : Node {
  explicit ConcatNode(int l) : Node(Kind::kConcat, l) {}
  Body parts;
};

struct CompareNode : Node {
  enum class Op { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };
  CompareNode(int l, NodePtr f) : Node(Kind::kCompare, l), first(std::move(f)) {}
  NodePtr first;
  std::vector<std::pair<Op, NodePtr>> rest;
};

// `ns.attr` as the target of `{% set %}`.
struct NamespaceRefNode : Node {
  NamespaceRefNode(int l, std::string n, std::string a)
      : Node(Kind::kNamespaceRef, l), name(std::move(n)), attribute(std::move(a)) {}
  std::string name, attribute;
};

struct OutputNode : Node {
  explicit OutputNode(int l) : Node(Kind::kOutput, l) {}
  Body items;
};

struct ForNode : Node {
  explicit ForNode(int l) : Node(Kind::kFor, l) {}
  NodePtr target, iterable, filter;  // filter may be null
  Body body, else_body;
  bool recursive = false;
};

struct IfNode : Node {
  explicit IfNode(int l) : Node(Kind::kIf, l) {}
  std::vector<std::pair<NodePtr, Body>> branches;  // if, then each elif
  Body else_body;
};

struct AssignNode : Node {
  AssignNode(int l, NodePtr t, NodePtr v)
      : Node(Kind::kAssign, l), target(std::move(t)), value(std::move(v)) {}
  NodePtr target, value;
};

struct AssignBlockNode : Node {
  explicit AssignBlockNode(int l) : Node(Kind::kAssignBlock, l) {}
  NodePtr target;
  NodePtr filter;  // a FilterNode chain ending in a null operand, or null
  Body body;
};

// A macro's or call block's signature and body.
struct MacroSignature {
  std::vector<std::string> params;
  Body defaults;  // for the last defaults.size() params
  bool uses_caller = false, uses_varargs = false, uses_kwargs = false;
};

struct MacroNode : Node {
  explicit MacroNode(int l) : Node(Kind::kMacro, l) {}
  std::string name;
  MacroSignature signature;
  Body body;
};

// `{% call(args) macro(...) %}body{% endcall %}`, and the `{% generation %}` tag transformers
// adds (its body is the caller of an identity call).
struct CallBlockNode : Node {
  explicit CallBlockNode(int l) : Node(Kind::kCallBlock, l) {}
  NodePtr call;  // null for {% generation %}
  MacroSignature signature;
  Body body;
};

struct FilterBlockNode : Node {
  explicit FilterBlockNode(int l) : Node(Kind::kFilterBlock, l) {}
  NodePtr filter;
  Body body;
};

struct WithNode : Node {
  explicit WithNode(int l) : Node(Kind::kWith, l) {}
  std::vector<std::pair<NodePtr, NodePtr>> assignments;
  Body body;
};

// Calls `fn` on each direct child of `node` that is evaluated (not assignment targets).
void for_each_child(Node& node, const std::function<void(Node&)>& fn);

// A parsed template: its top-level statements.
struct TemplateAst {
  Body body;
};

}  // namespace loraserve::chat::jinja
