#include "cli/json_lines.h"

#include "common/excerpt.h"
#include "common/untrusted_json.h"

namespace loraserve::cli {

Result<nlohmann::json> parse_object_line(const std::string& line) {
  LS_ASSIGN_OR_RETURN(nlohmann::json j, parse_untrusted_json(line, "line"));
  if (!j.is_object()) return invalid_argument_error("line is not a JSON object");
  return j;
}

Status unknown_field_error(std::string_view name) {
  return invalid_argument_error("unknown field {}", excerpt(name));
}

Result<std::vector<int32_t>> token_id_list(const nlohmann::json& value, std::string_view field) {
  if (!value.is_array())
    return invalid_argument_error("field '{}' must be a list of token ids", field);
  std::vector<int32_t> ids;
  ids.reserve(value.size());
  for (const nlohmann::json& t : value) {
    if (!t.is_number_integer() || t.get<int64_t>() < INT32_MIN || t.get<int64_t>() > INT32_MAX)
      return invalid_argument_error("field '{}' holds {}, not a token id", field, json_excerpt(t));
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return ids;
}

nlohmann::json error_json(const Status& status) {
  return {
      {"error",
       {{"code", std::string(status_code_name(status.code()))}, {"message", status.message()}}}};
}

}  // namespace loraserve::cli
