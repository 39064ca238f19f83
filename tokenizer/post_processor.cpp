#include "tokenizer/post_processor.h"

namespace loraserve::tokenizer {
namespace {

// "single": [{"SpecialToken": {"id": "<s>", ...}}, {"Sequence": {"id": "A", ...}}, ...] with
// "special_tokens": {"<s>": {"ids": [1], ...}}.
Result<PostProcessor> template_processing(const json& config, const std::string& path) {
  const std::string single_path = field_path(path, "single");
  const json* single = find_field(config, "single");
  if (single == nullptr || !single->is_array()) {
    return invalid_argument_error("{}: expected a list of template pieces", single_path);
  }
  const json* specials = find_field(config, "special_tokens");
  const std::string specials_path = field_path(path, "special_tokens");
  if (specials != nullptr && !specials->is_null() && !specials->is_object()) {
    return invalid_argument_error("{}: expected an object", specials_path);
  }
  std::vector<int32_t> prefix, suffix;
  bool seen_sequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const json& piece = (*single)[i];
    const std::string at = element_path(single_path, i);
    if (const json* seq = piece.is_object() ? find_field(piece, "Sequence") : nullptr) {
      LS_RETURN_IF_ERROR(expect_object(*seq, at + ".Sequence"));
      LS_ASSIGN_OR_RETURN(std::string which, string_field(*seq, "id", at + ".Sequence"));
      if (which != "A" || seen_sequence) {
        return invalid_argument_error(
            "{}: a single-sequence template holds sequence A once, got {}", at, shown(piece));
      }
      seen_sequence = true;
      continue;
    }
    const json* special = piece.is_object() ? find_field(piece, "SpecialToken") : nullptr;
    if (special == nullptr) {
      return invalid_argument_error(
          "{}: expected {{\"SpecialToken\": ...}} or {{\"Sequence\": ...}}", at);
    }
    LS_RETURN_IF_ERROR(expect_object(*special, at + ".SpecialToken"));
    LS_ASSIGN_OR_RETURN(std::string name, string_field(*special, "id", at + ".SpecialToken"));
    const json* entry =
        specials != nullptr && specials->is_object() ? find_field(*specials, name) : nullptr;
    if (entry == nullptr) {
      return invalid_argument_error("{}: special token {} is not in {}", at, excerpt(name),
                                    specials_path);
    }
    const std::string entry_path = fmt::format("{}[{}]", specials_path, json_excerpt(json(name)));
    LS_RETURN_IF_ERROR(expect_object(*entry, entry_path));
    const json* ids = find_field(*entry, "ids");
    if (ids == nullptr || !ids->is_array()) {
      return invalid_argument_error("{}.ids: expected a list of token ids", entry_path);
    }
    for (size_t k = 0; k < ids->size(); ++k) {
      LS_ASSIGN_OR_RETURN(int32_t id,
                          token_id_value((*ids)[k], element_path(entry_path + ".ids", k)));
      (seen_sequence ? suffix : prefix).push_back(id);
    }
  }
  if (!seen_sequence) {
    return invalid_argument_error("{}: the template has no {{\"Sequence\": {{\"id\": \"A\"}}}}",
                                  single_path);
  }
  return PostProcessor(std::move(prefix), std::move(suffix));
}

// BertProcessing / RobertaProcessing: {"cls": ["[CLS]", 101], "sep": ["[SEP]", 102]}.
Result<PostProcessor> cls_sep_processing(const json& config, const std::string& path) {
  int32_t ids[2];
  const char* keys[2] = {"cls", "sep"};
  for (int k = 0; k < 2; ++k) {
    const json* pair = find_field(config, keys[k]);
    const std::string at = field_path(path, keys[k]);
    if (pair == nullptr || !pair->is_array() || pair->size() != 2 || !(*pair)[0].is_string()) {
      return invalid_argument_error("{}: expected [\"token\", id]", at);
    }
    LS_ASSIGN_OR_RETURN(ids[k], token_id_value((*pair)[1], element_path(at, 1)));
  }
  return PostProcessor({ids[0]}, {ids[1]});
}

}  // namespace

Result<PostProcessor> PostProcessor::from_json(const json& config, const std::string& path) {
  if (config.is_null()) return PostProcessor({}, {});
  LS_RETURN_IF_ERROR(expect_object(config, path));
  LS_ASSIGN_OR_RETURN(std::string type, string_field(config, "type", path));
  if (type == "TemplateProcessing") return template_processing(config, path);
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    return cls_sep_processing(config, path);
  }
  if (type == "ByteLevel") return PostProcessor({}, {});
  if (type == "Sequence") {
    const std::string list_path = field_path(path, "processors");
    const json* list = find_field(config, "processors");
    if (list == nullptr || !list->is_array()) {
      return invalid_argument_error("{}: expected a list of post-processors", list_path);
    }
    std::vector<int32_t> prefix, suffix;
    for (size_t i = 0; i < list->size(); ++i) {
      LS_ASSIGN_OR_RETURN(PostProcessor step, from_json((*list)[i], element_path(list_path, i)));
      prefix.insert(prefix.begin(), step.prefix_.begin(), step.prefix_.end());
      suffix.insert(suffix.end(), step.suffix_.begin(), step.suffix_.end());
    }
    return PostProcessor(std::move(prefix), std::move(suffix));
  }
  return invalid_argument_error(
      "{}: unsupported post-processor type {} (supported: TemplateProcessing, BertProcessing, "
      "RobertaProcessing, ByteLevel, Sequence)",
      field_path(path, "type"), excerpt(type));
}

void PostProcessor::apply(std::vector<int32_t>* ids) const {
  ids->insert(ids->begin(), prefix_.begin(), prefix_.end());
  ids->insert(ids->end(), suffix_.begin(), suffix_.end());
}

}  // namespace loraserve::tokenizer
