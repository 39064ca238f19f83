#include "cli/json_lines.h"

namespace loraserve::cli {

Result<nlohmann::json> parse_object_line(const std::string& line) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    return invalid_argument_error("line is not valid JSON: {}", e.what());
  }
  if (!j.is_object()) return invalid_argument_error("line is not a JSON object");
  return j;
}

Result<std::vector<int32_t>> token_id_list(const nlohmann::json& value, std::string_view field) {
  if (!value.is_array())
    return invalid_argument_error("field '{}' must be a list of token ids", field);
  std::vector<int32_t> ids;
  ids.reserve(value.size());
  for (const nlohmann::json& t : value) {
    if (!t.is_number_integer() || t.get<int64_t>() < INT32_MIN || t.get<int64_t>() > INT32_MAX)
      return invalid_argument_error("field '{}' holds {}, not a token id", field, t.dump());
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
