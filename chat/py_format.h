// Python's text formatting on template values: `fmt % args` (printf style, also Jinja's
// `format` filter), str.format (through the sandbox's attribute rules) and json.dumps (what
// transformers' `tojson` filter calls). Errors are TemplateErrors with Python's messages.
#pragma once

#include <optional>
#include <string>

#include "chat/jinja_value.h"

namespace loraserve::chat::jinja::py {

// `format % args`: args is a tuple (positional), a dict (for %(name)s), or a single value.
std::string percent_format(const std::string& format, const Value& args);

// format.format(*args, **kwargs).
std::string str_format(const std::string& format, const CallArgs& args);

// json.dumps(value, ensure_ascii=..., indent=..., separators=..., sort_keys=...).
struct JsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;          // nullopt: one line
  std::optional<std::string> item_separator;  // default ", " (one line) or "," (indented)
  std::string key_separator = ": ";
  bool sort_keys = false;
};
std::string json_dumps(const Value& value, const JsonOptions& options);

}  // namespace loraserve::chat::jinja::py
