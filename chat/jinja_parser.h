// Builds the syntax tree of a template from its tokens with Jinja2's grammar
// (jinja2/parser.py): statements for/if/set/macro/call/filter/with/break/continue and
// transformers' generation tag; expressions with Jinja's precedence (conditional, or, and, not,
// comparisons and `in`, + -, ~, * / // %, **, unary, filters and tests, calls, subscripts and
// attributes). Filters and tests are resolved here, so an unknown one is a syntax error as in
// Jinja. include/import/extends/block need a template loader, which chat templates do not
// have, and are refused. Nesting is bounded (kMaxNesting) so that no template can exhaust the
// stack.
#pragma once

#include <string_view>

#include "chat/jinja_ast.h"

namespace loraserve::chat::jinja {

// Deepest nesting of blocks and expressions a template may have.
inline constexpr int kMaxNesting = 100;

// REQUIRES: `source` is valid UTF-8. Throws TemplateError (TemplateSyntaxError, with the line).
TemplateAst parse(std::string_view source);

}  // namespace loraserve::chat::jinja
