// What `loraserve generate` and `loraserve tokenize` share in reading JSON lines and writing
// their answers: one object per line, token-id lists checked to fit int32, and the error object
// a line gets in place of its result.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace loraserve::cli {

// The line as a JSON object, parsed as untrusted JSON (its size and nesting capped by
// --max-json-bytes and --max-json-depth); INVALID_ARGUMENT naming what is wrong otherwise (the
// byte at fault, e.g. an ill-formed UTF-8 byte inside a string, with at most an excerpt of it).
Result<nlohmann::json> parse_object_line(const std::string& line);

// INVALID_ARGUMENT for a field the command does not know, with an excerpt of its name.
Status unknown_field_error(std::string_view name);

// `value` (the line's field `field`) as token ids: a list of integers that fit int32.
Result<std::vector<int32_t>> token_id_list(const nlohmann::json& value, std::string_view field);

// {"error": {"code": "INVALID_ARGUMENT", "message": "..."}}
nlohmann::json error_json(const Status& status);

}  // namespace loraserve::cli
