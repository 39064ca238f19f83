// The methods of Python's str, list, tuple and dict that templates call (`text.strip()`,
// `message.get('content')`, `content.split('</think>')`), with Python's semantics. Methods that
// mutate (list.append, dict.update, ...) are what transformers' ImmutableSandboxedEnvironment
// refuses: looking them up gives an Undefined that raises SecurityError when called.
#pragma once

#include <optional>
#include <string>

#include "chat/jinja_value.h"

namespace loraserve::chat::jinja::py {

// The bound method `name` of `receiver` (a str, list, tuple or dict), an Undefined that raises
// when used (an unsafe or unsupported method), or nullopt when Python's type has no attribute
// of that name.
std::optional<Value> method(const Value& receiver, const std::string& name);

// receiver.name(*args) for a method that method() finds.
Value call_method(const Value& receiver, const std::string& name, const CallArgs& args);

}  // namespace loraserve::chat::jinja::py
