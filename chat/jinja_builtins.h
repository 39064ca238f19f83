// Jinja2's built-in filters and tests and the global functions a chat template sees: Jinja's
// range (the sandbox's, at most 100000 items), dict, namespace, cycler and joiner, and
// transformers' raise_exception, strftime_now and tojson (json.dumps without HTML escaping,
// ensure_ascii off, with indent / separators / sort_keys).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_ast.h"

namespace loraserve::chat::jinja {

// nullptr when there is no filter (or test) of that name.
FilterFn find_filter(const std::string& name);
TestFn find_test(const std::string& name);
// The error for an unknown name: Jinja's "No filter named 'x'.", or that the filter exists in
// Jinja but not here (those that need HTML, randomness or pretty printing).
std::string unknown_filter_message(const std::string& name);
std::string unknown_test_message(const std::string& name);

std::vector<std::pair<std::string, Value>> global_functions();

}  // namespace loraserve::chat::jinja
