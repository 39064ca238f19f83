#include "chat/jinja_ast.h"

namespace loraserve::chat::jinja {
namespace {

void each(Body& body, const std::function<void(Node&)>& fn) {
  for (NodePtr& n : body) fn(*n);
}

void each_argument(CallArguments& args, const std::function<void(Node&)>& fn) {
  each(args.positional, fn);
  for (auto& [key, value] : args.keyword) fn(*value);
  if (args.star_args) fn(*args.star_args);
  if (args.star_kwargs) fn(*args.star_kwargs);
}

}  // namespace

void for_each_child(Node& node, const std::function<void(Node&)>& fn) {
  switch (node.kind) {
    case Node::Kind::kTuple:
    case Node::Kind::kList:
      each(static_cast<SequenceNode&>(node).items, fn);
      return;
    case Node::Kind::kDict:
      for (auto& [key, value] : static_cast<DictNode&>(node).pairs) {
        fn(*key);
        fn(*value);
      }
      return;
    case Node::Kind::kGetattr:
      fn(*static_cast<GetattrNode&>(node).object);
      return;
    case Node::Kind::kGetitem:
      fn(*static_cast<GetitemNode&>(node).object);
      fn(*static_cast<GetitemNode&>(node).key);
      return;
    case Node::Kind::kSlice: {
      auto& s = static_cast<SliceNode&>(node);
      for (NodePtr* part : {&s.start, &s.stop, &s.step}) {
        if (*part) fn(**part);
      }
      return;
    }
    case Node::Kind::kCall:
      fn(*static_cast<CallNode&>(node).callee);
      each_argument(static_cast<CallNode&>(node).args, fn);
      return;
    case Node::Kind::kFilter:
      if (static_cast<FilterNode&>(node).operand) fn(*static_cast<FilterNode&>(node).operand);
      each_argument(static_cast<FilterNode&>(node).args, fn);
      return;
    case Node::Kind::kTest:
      fn(*static_cast<TestNode&>(node).operand);
      each_argument(static_cast<TestNode&>(node).args, fn);
      return;
    case Node::Kind::kCondExpr: {
      auto& c = static_cast<CondExprNode&>(node);
      fn(*c.test);
      fn(*c.then);
      if (c.otherwise) fn(*c.otherwise);
      return;
    }
    case Node::Kind::kAnd:
    case Node::Kind::kOr:
    case Node::Kind::kNot:
    case Node::Kind::kNeg:
    case Node::Kind::kPos: {
      auto& l = static_cast<LogicNode&>(node);
      fn(*l.left);
      if (l.right) fn(*l.right);
      return;
    }
    case Node::Kind::kBinary:
      fn(*static_cast<BinaryNode&>(node).left);
      fn(*static_cast<BinaryNode&>(node).right);
      return;
    case Node::Kind::kConcat:
      each(static_cast<ConcatNode&>(node).parts, fn);
      return;
    case Node::Kind::kCompare:
      fn(*static_cast<CompareNode&>(node).first);
      for (auto& [op, operand] : static_cast<CompareNode&>(node).rest) fn(*operand);
      return;
    case Node::Kind::kOutput:
      each(static_cast<OutputNode&>(node).items, fn);
      return;
    case Node::Kind::kFor: {
      auto& f = static_cast<ForNode&>(node);
      fn(*f.iterable);
      if (f.filter) fn(*f.filter);
      each(f.body, fn);
      each(f.else_body, fn);
      return;
    }
    case Node::Kind::kIf:
      for (auto& [test, body] : static_cast<IfNode&>(node).branches) {
        fn(*test);
        each(body, fn);
      }
      each(static_cast<IfNode&>(node).else_body, fn);
      return;
    case Node::Kind::kAssign:
      fn(*static_cast<AssignNode&>(node).value);
      return;
    case Node::Kind::kAssignBlock:
      if (static_cast<AssignBlockNode&>(node).filter)
        fn(*static_cast<AssignBlockNode&>(node).filter);
      each(static_cast<AssignBlockNode&>(node).body, fn);
      return;
    case Node::Kind::kMacro:
      each(static_cast<MacroNode&>(node).signature.defaults, fn);
      each(static_cast<MacroNode&>(node).body, fn);
      return;
    case Node::Kind::kCallBlock: {
      auto& c = static_cast<CallBlockNode&>(node);
      if (c.call) fn(*c.call);
      each(c.signature.defaults, fn);
      each(c.body, fn);
      return;
    }
    case Node::Kind::kFilterBlock:
      fn(*static_cast<FilterBlockNode&>(node).filter);
      each(static_cast<FilterBlockNode&>(node).body, fn);
      return;
    case Node::Kind::kWith:
      for (auto& [target, value] : static_cast<WithNode&>(node).assignments) fn(*value);
      each(static_cast<WithNode&>(node).body, fn);
      return;
    default:
      return;
  }
}

}  // namespace loraserve::chat::jinja
