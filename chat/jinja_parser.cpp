#include "chat/jinja_parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>

#include "chat/jinja_builtins.h"
#include "chat/jinja_interpreter.h"
#include "chat/jinja_lexer.h"
#include "chat/py_ops.h"

namespace loraserve::chat::jinja {
namespace {

using Type = Token::Type;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  TemplateAst run() {
    TemplateAst ast;
    ast.body = subparse({});
    return ast;
  }

 private:
  // An end-tag set such as {"endfor", "else"}.
  using EndTags = std::vector<std::string>;

  // Counts nesting while alive; too deep is an error.
  class Nested {
   public:
    explicit Nested(Parser* p) : p_(p) {
      if (++p_->depth_ > kMaxNesting) {
        p_->fail(fmt::format("the template nests blocks or expressions deeper than {} levels",
                             kMaxNesting));
      }
    }
    ~Nested() { --p_->depth_; }

   private:
    Parser* p_;
  };

  // Counts the levels a left-nested chain (a + b + c, x.y.z, v|f|g) adds to the tree.
  class Chain {
   public:
    explicit Chain(Parser* p) : p_(p) {}
    void add() {
      ++links_;
      if (++p_->depth_ > kMaxNesting) {
        p_->fail(fmt::format("the template nests blocks or expressions deeper than {} levels",
                             kMaxNesting));
      }
    }
    ~Chain() { p_->depth_ -= links_; }

   private:
    Parser* p_;
    int links_ = 0;
  };

  const Token& current() const { return tokens_[pos_]; }
  const Token& look() const { return tokens_[std::min(pos_ + 1, tokens_.size() - 1)]; }
  const Token& next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  bool is_op(std::string_view op) const {
    return current().type == Type::kOperator && current().text == op;
  }
  bool is_name(std::string_view name) const {
    return current().type == Type::kName && current().text == name;
  }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }

  [[noreturn]] void fail(std::string message, int line = 0) const {
    throw TemplateError("TemplateSyntaxError", std::move(message),
                        line > 0 ? line : current().line);
  }

  [[noreturn]] void fail_expected(std::string_view expected) const {
    if (current().type == Type::kEof) {
      fail(fmt::format("unexpected end of template, expected '{}'.", expected));
    }
    fail(fmt::format("expected token '{}', got '{}'", expected, describe(current())));
  }

  const Token& expect(Type type, std::string_view what) {
    if (current().type != type) fail_expected(what);
    return next();
  }
  void expect_op(std::string_view op) {
    if (!is_op(op)) fail_expected(op);
    next();
  }
  void expect_name(std::string_view name) {
    if (!is_name(name)) fail_expected(name);
    next();
  }
  void expect_block_end() { expect(Type::kBlockEnd, "end of statement block"); }

  [[noreturn]] void fail_unknown_or_eof(const std::string* tag, int line) const {
    std::string message = tag == nullptr ? "Unexpected end of template."
                                         : fmt::format("Encountered unknown tag '{}'.", *tag);
    if (!end_stack_.empty()) {
      std::string looking;
      for (const std::string& t : end_stack_.back()) {
        if (!looking.empty()) looking += " or ";
        looking += "'" + t + "'";
      }
      bool expected_somewhere = false;
      for (const EndTags& tags : end_stack_) {
        expected_somewhere |=
            tag != nullptr && std::find(tags.begin(), tags.end(), *tag) != tags.end();
      }
      if (expected_somewhere) {
        message += fmt::format(
            " You probably made a nesting mistake. Jinja is expecting this tag, but currently "
            "looking for {}.",
            looking);
      } else {
        message += fmt::format(" Jinja was looking for the following tags: {}.", looking);
      }
    }
    if (!tag_stack_.empty()) {
      message +=
          fmt::format(" The innermost block that needs to be closed is '{}'.", tag_stack_.back());
    }
    fail(message, line);
  }

  // Statements and output until one of `end` (or the end of the template at the top level).
  Body subparse(const EndTags& end) {
    Nested nested(this);
    Body body;
    std::unique_ptr<OutputNode> output;
    auto flush = [&] {
      if (output) body.push_back(std::move(output));
    };
    if (!end.empty()) end_stack_.push_back(end);
    while (current().type != Type::kEof) {
      const Token& token = current();
      if (token.type == Type::kData) {
        if (!output) output = std::make_unique<OutputNode>(token.line);
        output->items.push_back(std::make_unique<ConstNode>(Node::Kind::kTemplateData, token.line,
                                                            Value::string(token.text)));
        next();
      } else if (token.type == Type::kVariableBegin) {
        if (!output) output = std::make_unique<OutputNode>(token.line);
        next();
        output->items.push_back(parse_tuple(TupleMode::kFull, {}, false));
        expect(Type::kVariableEnd, "end of print statement");
      } else if (token.type == Type::kBlockBegin) {
        flush();
        next();
        if (!end.empty() && current().type == Type::kName &&
            std::find(end.begin(), end.end(), current().text) != end.end()) {
          end_stack_.pop_back();
          return body;
        }
        body.push_back(parse_statement());
        expect_block_end();
      } else {
        fail(fmt::format("unexpected '{}'", describe(token)));
      }
    }
    flush();
    if (!end.empty()) end_stack_.pop_back();
    return body;
  }

  // The statements of a block up to one of `end`; with `drop_end` the end tag is consumed.
  Body parse_statements(const EndTags& end, bool drop_end) {
    skip_op(":");
    expect_block_end();
    Body body = subparse(end);
    if (current().type == Type::kEof) {
      end_stack_.push_back(end);
      fail_unknown_or_eof(nullptr, current().line);
    }
    if (drop_end) next();
    return body;
  }

  NodePtr parse_statement() {
    const Token& token = current();
    if (token.type != Type::kName) fail("tag name expected", token.line);
    const std::string tag = token.text;
    const int line = token.line;
    if (tag == "include" || tag == "import" || tag == "from" || tag == "extends" ||
        tag == "block" || tag == "autoescape") {
      fail(fmt::format("'{{% {} %}}' is not supported in chat templates (there is no template "
                       "loader, and loraserve does not escape HTML)",
                       tag),
           line);
    }
    static const char* kTags[] = {"for",  "if",    "set",        "macro", "call",    "filter",
                                  "with", "print", "generation", "break", "continue"};
    if (std::none_of(std::begin(kTags), std::end(kTags), [&](const char* t) { return tag == t; })) {
      fail_unknown_or_eof(&tag, line);
    }
    tag_stack_.push_back(tag);
    struct Pop {
      std::vector<std::string>* stack;
      ~Pop() { stack->pop_back(); }
    } pop{&tag_stack_};
    if (tag == "for") return parse_for();
    if (tag == "if") return parse_if();
    if (tag == "set") return parse_set();
    if (tag == "macro") return parse_macro();
    if (tag == "call") return parse_call_block();
    if (tag == "filter") return parse_filter_block();
    if (tag == "with") return parse_with();
    if (tag == "print") return parse_print();
    if (tag == "generation") return parse_generation();
    next();
    if (loop_depth_ == 0) fail(fmt::format("'{}' outside of a loop", tag), line);
    return std::make_unique<Node>(tag == "break" ? Node::Kind::kBreak : Node::Kind::kContinue,
                                  line);
  }

  NodePtr parse_for() {
    auto node = std::make_unique<ForNode>(current().line);
    next();
    node->target = parse_assign_target(true, false, {"in"});
    expect_name("in");
    node->iterable = parse_tuple(TupleMode::kNoCondExpr, {"recursive"}, false);
    if (skip_name("if")) node->filter = parse_expression(true);
    node->recursive = skip_name("recursive");
    ++loop_depth_;
    node->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    if (next().text != "endfor") {
      const int saved = loop_depth_;
      loop_depth_ = 0;
      node->else_body = parse_statements({"endfor"}, true);
      loop_depth_ = saved;
    }
    return node;
  }

  NodePtr parse_if() {
    auto node = std::make_unique<IfNode>(current().line);
    next();
    while (true) {
      NodePtr test = parse_tuple(TupleMode::kNoCondExpr, {}, false);
      Body body = parse_statements({"elif", "else", "endif"}, false);
      node->branches.emplace_back(std::move(test), std::move(body));
      const Token& token = next();
      if (token.text == "elif") continue;
      if (token.text == "else") node->else_body = parse_statements({"endif"}, true);
      break;
    }
    return node;
  }

  NodePtr parse_set() {
    const int line = next().line;
    NodePtr target = parse_assign_target(true, false, {}, true);
    if (skip_op("=")) {
      NodePtr value = parse_tuple(TupleMode::kFull, {}, false);
      return std::make_unique<AssignNode>(line, std::move(target), std::move(value));
    }
    auto node = std::make_unique<AssignBlockNode>(line);
    node->target = std::move(target);
    if (is_op("|")) node->filter = parse_filter(nullptr, false);
    node->body = parse_statements({"endset"}, true);
    return node;
  }

  void parse_signature(MacroSignature* signature) {
    expect_op("(");
    while (!is_op(")")) {
      if (!signature->params.empty()) expect_op(",");
      const Token& name = expect(Type::kName, "name");
      if (!can_assign(name.text)) fail(fmt::format("can't assign to '{}'", name.text), name.line);
      signature->params.push_back(name.text);
      if (skip_op("=")) {
        signature->defaults.push_back(parse_expression(true));
      } else if (!signature->defaults.empty()) {
        fail("non-default argument follows default argument");
      }
    }
    expect_op(")");
  }

  // Which of caller/varargs/kwargs a macro body reads (Jinja's find_undeclared).
  static void scan_names(const Node& node, MacroSignature* signature);
  static void scan_body(const Body& body, MacroSignature* signature) {
    for (const NodePtr& n : body) scan_names(*n, signature);
  }

  NodePtr parse_macro() {
    auto node = std::make_unique<MacroNode>(next().line);
    const Token& name = expect(Type::kName, "name");
    if (!can_assign(name.text)) fail(fmt::format("can't assign to '{}'", name.text), name.line);
    node->name = name.text;
    parse_signature(&node->signature);
    const int saved = loop_depth_;
    loop_depth_ = 0;
    node->body = parse_statements({"endmacro"}, true);
    loop_depth_ = saved;
    scan_body(node->body, &node->signature);
    return node;
  }

  NodePtr parse_call_block() {
    auto node = std::make_unique<CallBlockNode>(next().line);
    if (is_op("(")) parse_signature(&node->signature);
    NodePtr call = parse_expression(true);
    if (call->kind != Node::Kind::kCall) fail("expected call", node->line);
    node->call = std::move(call);
    const int saved = loop_depth_;
    loop_depth_ = 0;
    node->body = parse_statements({"endcall"}, true);
    loop_depth_ = saved;
    scan_body(node->body, &node->signature);
    return node;
  }

  NodePtr parse_generation() {
    auto node = std::make_unique<CallBlockNode>(next().line);
    const int saved = loop_depth_;
    loop_depth_ = 0;
    node->body = parse_statements({"endgeneration"}, true);
    loop_depth_ = saved;
    return node;
  }

  NodePtr parse_filter_block() {
    auto node = std::make_unique<FilterBlockNode>(next().line);
    node->filter = parse_filter(nullptr, true);
    node->body = parse_statements({"endfilter"}, true);
    return node;
  }

  NodePtr parse_with() {
    auto node = std::make_unique<WithNode>(next().line);
    while (current().type != Type::kBlockEnd) {
      if (!node->assignments.empty()) expect_op(",");
      NodePtr target = parse_assign_target(true, false, {});
      expect_op("=");
      node->assignments.emplace_back(std::move(target), parse_expression(true));
    }
    node->body = parse_statements({"endwith"}, true);
    return node;
  }

  NodePtr parse_print() {
    auto node = std::make_unique<OutputNode>(next().line);
    while (current().type != Type::kBlockEnd) {
      if (!node->items.empty()) expect_op(",");
      node->items.push_back(parse_expression(true));
    }
    return node;
  }

  static bool can_assign(const std::string& name) {
    static const char* kConstants[] = {"true", "false", "none", "True", "False", "None"};
    return std::none_of(std::begin(kConstants), std::end(kConstants),
                        [&](const char* c) { return name == c; });
  }

  // A name, a tuple of names, or (for set) `namespace.attribute`.
  NodePtr parse_assign_target(bool with_tuple, bool name_only, const EndTags& extra_end,
                              bool with_namespace = false) {
    if (with_namespace && look().type == Type::kOperator && look().text == ".") {
      const Token& name = expect(Type::kName, "name");
      const std::string ns = name.text;
      const int line = name.line;
      next();
      const Token& attribute = expect(Type::kName, "name");
      return std::make_unique<NamespaceRefNode>(line, ns, attribute.text);
    }
    NodePtr target;
    if (name_only) {
      const Token& name = expect(Type::kName, "name");
      target = std::make_unique<NameNode>(name.line, name.text);
    } else if (with_tuple) {
      target = parse_tuple(TupleMode::kSimplified, extra_end, false);
    } else {
      target = parse_primary();
    }
    check_assignable(*target);
    return target;
  }

  void check_assignable(const Node& target) const {
    if (target.kind == Node::Kind::kName) {
      const auto& name = as<NameNode>(target).name;
      if (can_assign(name)) return;
      fail(fmt::format("can't assign to '{}'", name), target.line);
    }
    if (target.kind == Node::Kind::kTuple) {
      for (const NodePtr& item : as<SequenceNode>(target).items) check_assignable(*item);
      return;
    }
    fail(target.kind == Node::Kind::kConst ? "can't assign to 'const'"
                                           : "can't assign to this expression",
         target.line);
  }

  // ---- expressions ----

  NodePtr parse_expression(bool with_condexpr) {
    Nested nested(this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  NodePtr parse_condexpr() {
    int line = current().line;
    NodePtr expr = parse_or();
    Chain chain(this);
    while (skip_name("if")) {
      chain.add();
      auto cond = std::make_unique<CondExprNode>(line);
      cond->test = parse_or();
      cond->then = std::move(expr);
      if (skip_name("else")) cond->otherwise = parse_condexpr();
      expr = std::move(cond);
      line = current().line;
    }
    return expr;
  }

  NodePtr parse_or() {
    int line = current().line;
    NodePtr left = parse_and();
    Chain chain(this);
    while (skip_name("or")) {
      chain.add();
      left = std::make_unique<LogicNode>(Node::Kind::kOr, line, std::move(left), parse_and());
      line = current().line;
    }
    return left;
  }

  NodePtr parse_and() {
    int line = current().line;
    NodePtr left = parse_not();
    Chain chain(this);
    while (skip_name("and")) {
      chain.add();
      left = std::make_unique<LogicNode>(Node::Kind::kAnd, line, std::move(left), parse_not());
      line = current().line;
    }
    return left;
  }

  NodePtr parse_not() {
    if (is_name("not")) {
      Nested nested(this);
      const int line = next().line;
      return std::make_unique<LogicNode>(Node::Kind::kNot, line, parse_not());
    }
    return parse_compare();
  }

  NodePtr parse_compare() {
    int line = current().line;
    NodePtr expr = parse_math1();
    std::vector<std::pair<CompareNode::Op, NodePtr>> ops;
    while (true) {
      using Op = CompareNode::Op;
      std::optional<Op> op;
      if (current().type == Type::kOperator) {
        const std::string& t = current().text;
        if (t == "==") op = Op::kEq;
        if (t == "!=") op = Op::kNe;
        if (t == "<") op = Op::kLt;
        if (t == "<=") op = Op::kLe;
        if (t == ">") op = Op::kGt;
        if (t == ">=") op = Op::kGe;
        if (op) next();
      } else if (is_name("in")) {
        next();
        op = Op::kIn;
      } else if (is_name("not") && look().type == Type::kName && look().text == "in") {
        next();
        next();
        op = Op::kNotIn;
      }
      if (!op) break;
      ops.emplace_back(*op, parse_math1());
      line = current().line;
    }
    if (ops.empty()) return expr;
    auto node = std::make_unique<CompareNode>(line, std::move(expr));
    node->rest = std::move(ops);
    return node;
  }

  NodePtr parse_math1() {
    int line = current().line;
    NodePtr left = parse_concat();
    Chain chain(this);
    while (is_op("+") || is_op("-")) {
      chain.add();
      const auto op = next().text == "+" ? py::BinaryOp::kAdd : py::BinaryOp::kSub;
      left =
          std::make_unique<BinaryNode>(line, static_cast<int>(op), std::move(left), parse_concat());
      line = current().line;
    }
    return left;
  }

  NodePtr parse_concat() {
    const int line = current().line;
    NodePtr first = parse_math2();
    if (!is_op("~")) return first;
    auto node = std::make_unique<ConcatNode>(line);
    node->parts.push_back(std::move(first));
    while (skip_op("~")) node->parts.push_back(parse_math2());
    return node;
  }

  NodePtr parse_math2() {
    int line = current().line;
    NodePtr left = parse_pow();
    Chain chain(this);
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      chain.add();
      const std::string& t = next().text;
      const auto op = t == "*"    ? py::BinaryOp::kMul
                      : t == "/"  ? py::BinaryOp::kDiv
                      : t == "//" ? py::BinaryOp::kFloorDiv
                                  : py::BinaryOp::kMod;
      left = std::make_unique<BinaryNode>(line, static_cast<int>(op), std::move(left), parse_pow());
      line = current().line;
    }
    return left;
  }

  NodePtr parse_pow() {
    int line = current().line;
    NodePtr left = parse_unary(true);
    Chain chain(this);
    while (skip_op("**")) {
      chain.add();
      left = std::make_unique<BinaryNode>(line, static_cast<int>(py::BinaryOp::kPow),
                                          std::move(left), parse_unary(true));
      line = current().line;
    }
    return left;
  }

  NodePtr parse_unary(bool with_filter) {
    Nested nested(this);
    const int line = current().line;
    NodePtr node;
    if (skip_op("-")) {
      node = std::make_unique<LogicNode>(Node::Kind::kNeg, line, parse_unary(false));
    } else if (skip_op("+")) {
      node = std::make_unique<LogicNode>(Node::Kind::kPos, line, parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  NodePtr parse_primary() {
    const Token& token = current();
    const int line = token.line;
    switch (token.type) {
      case Type::kName: {
        const std::string& n = token.text;
        NodePtr node;
        if (n == "true" || n == "True" || n == "false" || n == "False") {
          node = std::make_unique<ConstNode>(Node::Kind::kConst, line,
                                             Value::boolean(n == "true" || n == "True"));
        } else if (n == "none" || n == "None") {
          node = std::make_unique<ConstNode>(Node::Kind::kConst, line, Value::none());
        } else {
          node = std::make_unique<NameNode>(line, n);
        }
        next();
        return node;
      }
      case Type::kString: {
        std::string text;
        while (current().type == Type::kString) text += next().text;
        return std::make_unique<ConstNode>(Node::Kind::kConst, line,
                                           Value::string(std::move(text)));
      }
      case Type::kInteger:
        return std::make_unique<ConstNode>(Node::Kind::kConst, line,
                                           Value::integer(next().integer));
      case Type::kFloat:
        return std::make_unique<ConstNode>(Node::Kind::kConst, line, Value::number(next().number));
      case Type::kOperator:
        if (token.text == "(") {
          next();
          NodePtr node = parse_tuple(TupleMode::kFull, {}, true);
          expect_op(")");
          return node;
        }
        if (token.text == "[") return parse_list();
        if (token.text == "{") return parse_dict();
        break;
      default:
        break;
    }
    if (token.type == Type::kEof) fail("unexpected end of template", line);
    fail(fmt::format("unexpected '{}'", describe(token)), line);
  }

  enum class TupleMode { kFull, kNoCondExpr, kSimplified };

  // Comma-separated expressions: a tuple when there is a comma, else the one expression.
  NodePtr parse_tuple(TupleMode mode, const EndTags& extra_end, bool explicit_parens) {
    Nested nested(this);
    const int line = current().line;
    Body items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      switch (mode) {
        case TupleMode::kFull:
          items.push_back(parse_expression(true));
          break;
        case TupleMode::kNoCondExpr:
          items.push_back(parse_expression(false));
          break;
        case TupleMode::kSimplified:
          items.push_back(parse_primary());
          break;
      }
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) {
        fail(fmt::format("Expected an expression, got '{}'", describe(current())));
      }
    }
    auto node = std::make_unique<SequenceNode>(Node::Kind::kTuple, line);
    node->items = std::move(items);
    return node;
  }

  bool is_tuple_end(const EndTags& extra_end) const {
    if (current().type == Type::kVariableEnd || current().type == Type::kBlockEnd || is_op(")")) {
      return true;
    }
    return current().type == Type::kName &&
           std::find(extra_end.begin(), extra_end.end(), current().text) != extra_end.end();
  }

  NodePtr parse_list() {
    auto node = std::make_unique<SequenceNode>(Node::Kind::kList, current().line);
    expect_op("[");
    while (!is_op("]")) {
      if (!node->items.empty()) expect_op(",");
      if (is_op("]")) break;
      node->items.push_back(parse_expression(true));
    }
    expect_op("]");
    return node;
  }

  NodePtr parse_dict() {
    auto node = std::make_unique<DictNode>(current().line);
    expect_op("{");
    while (!is_op("}")) {
      if (!node->pairs.empty()) expect_op(",");
      if (is_op("}")) break;
      NodePtr key = parse_expression(true);
      expect_op(":");
      node->pairs.emplace_back(std::move(key), parse_expression(true));
    }
    expect_op("}");
    return node;
  }

  NodePtr parse_postfix(NodePtr node) {
    Chain chain(this);
    while (true) {
      if (is_op(".") || is_op("[") || is_op("(")) chain.add();
      if (is_op(".") || is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  NodePtr parse_filter_expr(NodePtr node) {
    Chain chain(this);
    while (true) {
      if (is_op("|") || is_name("is") || is_op("(")) chain.add();
      if (is_op("|")) {
        node = parse_filter(std::move(node), false);
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  NodePtr parse_subscript(NodePtr node) {
    Nested nested(this);
    const Token& token = next();
    const int line = token.line;
    if (token.text == ".") {
      const Token& attribute = current();
      next();
      if (attribute.type == Type::kName) {
        return std::make_unique<GetattrNode>(line, std::move(node), attribute.text);
      }
      if (attribute.type != Type::kInteger) fail("expected name or number", attribute.line);
      return std::make_unique<GetitemNode>(
          line, std::move(node),
          std::make_unique<ConstNode>(Node::Kind::kConst, attribute.line,
                                      Value::integer(attribute.integer)));
    }
    Body args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    if (args.size() == 1)
      return std::make_unique<GetitemNode>(line, std::move(node), std::move(args[0]));
    auto tuple = std::make_unique<SequenceNode>(Node::Kind::kTuple, line);
    tuple->items = std::move(args);
    return std::make_unique<GetitemNode>(line, std::move(node), std::move(tuple));
  }

  NodePtr parse_subscribed() {
    const int line = current().line;
    auto slice = std::make_unique<SliceNode>(line);
    if (is_op(":")) {
      next();
    } else {
      NodePtr node = parse_expression(true);
      if (!is_op(":")) return node;
      next();
      slice->start = std::move(node);
    }
    if (!is_op(":") && !is_op("]") && !is_op(",")) slice->stop = parse_expression(true);
    if (is_op(":")) {
      next();
      if (!is_op("]") && !is_op(",")) slice->step = parse_expression(true);
    }
    return slice;
  }

  CallArguments parse_call_args() {
    const int line = current().line;
    expect_op("(");
    CallArguments args;
    bool require_comma = false;
    auto ensure = [&](bool ok) {
      if (!ok) fail("invalid syntax for function call expression", line);
    };
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*")) {
        ensure(!args.star_args && !args.star_kwargs);
        next();
        args.star_args = parse_expression(true);
      } else if (is_op("**")) {
        ensure(!args.star_kwargs);
        next();
        args.star_kwargs = parse_expression(true);
      } else if (current().type == Type::kName && look().type == Type::kOperator &&
                 look().text == "=") {
        ensure(!args.star_kwargs);
        const std::string key = next().text;
        next();
        args.keyword.emplace_back(key, parse_expression(true));
      } else {
        ensure(!args.star_args && !args.star_kwargs && args.keyword.empty());
        args.positional.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
    return args;
  }

  NodePtr parse_call(NodePtr node) {
    Nested nested(this);
    auto call = std::make_unique<CallNode>(current().line, std::move(node));
    call->args = parse_call_args();
    return call;
  }

  std::string dotted_name() {
    std::string name = expect(Type::kName, "name").text;
    while (skip_op(".")) name += "." + expect(Type::kName, "name").text;
    return name;
  }

  NodePtr parse_filter(NodePtr node, bool start_inline) {
    Chain chain(this);
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      chain.add();
      const int line = current().line;
      const std::string name = dotted_name();
      const FilterFn fn = find_filter(name);
      if (fn == nullptr) fail(unknown_filter_message(name), line);
      auto filter = std::make_unique<FilterNode>(line, std::move(node), name, fn);
      if (is_op("(")) filter->args = parse_call_args();
      node = std::move(filter);
      start_inline = false;
    }
    return node;
  }

  NodePtr parse_test(NodePtr node) {
    Nested nested(this);
    const int line = next().line;
    const bool negated = skip_name("not");
    const std::string name = dotted_name();
    const TestFn fn = find_test(name);
    if (fn == nullptr) fail(unknown_test_message(name), line);
    auto test = std::make_unique<TestNode>(line, std::move(node), name, fn);
    const Type t = current().type;
    if (is_op("(")) {
      test->args = parse_call_args();
    } else if ((t == Type::kName || t == Type::kString || t == Type::kInteger ||
                t == Type::kFloat || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      test->args.positional.push_back(parse_postfix(parse_primary()));
    }
    if (!negated) return test;
    return std::make_unique<LogicNode>(Node::Kind::kNot, line, std::move(test));
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  std::vector<EndTags> end_stack_;
  std::vector<std::string> tag_stack_;
};

void Parser::scan_names(const Node& node, MacroSignature* signature) {
  if (node.kind == Node::Kind::kName) {
    const std::string& name = as<NameNode>(node).name;
    signature->uses_caller |= name == "caller";
    signature->uses_varargs |= name == "varargs";
    signature->uses_kwargs |= name == "kwargs";
    return;
  }
  for_each_child(const_cast<Node&>(node),
                 [signature](Node& child) { scan_names(child, signature); });
}

}  // namespace

TemplateAst parse(std::string_view source) {
  TemplateAst ast = Parser(tokenize(source)).run();
  mark_constant_slices(ast);
  return ast;
}

}  // namespace loraserve::chat::jinja
