#include "tokenizer/tokenizer.h"

#include <spdlog/spdlog.h>

#include "common/untrusted_json.h"
#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_file(const std::string& path) {
  LS_ASSIGN_OR_RETURN(const ReadOnlyFile file, open_regular_file(path));
  return from_file(file);
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_file(const ReadOnlyFile& file) {
  LS_ASSIGN_OR_RETURN(const std::string text,
                      file.read_all(json_limits().max_bytes, "--max-json-bytes"));
  return from_json(text, file.name());
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_json(const std::string& json_text,
                                                        const std::string& source) {
  LS_ASSIGN_OR_RETURN(const json root, parse_untrusted_json(json_text, source));
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->source_ = source;
  Status status = tok->load(root);
  if (!status.ok()) return status.with_context(source);
  return tok;
}

Status Tokenizer::load(const json& root) {
  if (!root.is_object()) {
    return invalid_argument_error("expected a JSON object at the top, got {}", shown(root));
  }
  const json* model = find_field(root, "model");
  if (model == nullptr || !model->is_object()) {
    return invalid_argument_error("'model' is missing or not an object");
  }
  LS_ASSIGN_OR_RETURN(std::string model_type,
                      optional_string_field(*model, "type", "model", "BPE"));
  if (model_type != "BPE") {
    return invalid_argument_error("model.type: unsupported model type {} (supported: BPE)",
                                  excerpt(model_type));
  }
  LS_ASSIGN_OR_RETURN(model_, BpeModel::from_json(*model, "model"));
  static const json kNull;
  auto field = [&root](const char* key) -> const json& {
    const json* v = find_field(root, key);
    return v == nullptr ? kNull : *v;
  };
  LS_ASSIGN_OR_RETURN(normalizer_, make_normalizer(field("normalizer"), "normalizer"));
  LS_ASSIGN_OR_RETURN(pre_tokenizer_, make_pre_tokenizer(field("pre_tokenizer"), "pre_tokenizer"));
  LS_ASSIGN_OR_RETURN(post_processor_,
                      PostProcessor::from_json(field("post_processor"), "post_processor"));
  LS_ASSIGN_OR_RETURN(decoder_, Decoder::from_json(field("decoder"), "decoder"));
  LS_ASSIGN_OR_RETURN(
      added_, AddedVocabulary::from_json(field("added_tokens"), normalizer_.get(), "added_tokens"));
  for (const char* key : {"truncation", "padding"}) {
    if (!field(key).is_null()) {
      spdlog::warn("{}: '{}' is set and ignored: loraserve never truncates or pads prompts",
                   source_, key);
    }
  }
  int32_t max_id = model_->max_id();
  for (const AddedToken& t : added_.tokens()) max_id = std::max(max_id, t.id);
  vocab_size_ = max_id + 1;
  LS_RETURN_IF_ERROR(check_known_ids(post_processor_.prefix()).with_context("post_processor"));
  LS_RETURN_IF_ERROR(check_known_ids(post_processor_.suffix()).with_context("post_processor"));
  return ok_status();
}

Result<std::vector<int32_t>> Tokenizer::encode(std::string_view text,
                                               bool add_special_tokens) const {
  if (auto bad = find_invalid_utf8(text)) {
    return invalid_argument_error("text is not valid UTF-8: byte {} (0x{:02X}) at offset {}", *bad,
                                  static_cast<uint8_t>(text[*bad]), *bad);
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const TextSpan& span : added_.split(text, /*normalized_text=*/false)) {
    if (span.token >= 0) {
      ids.push_back(span.token);
    } else {
      LS_RETURN_IF_ERROR(
          encode_piece(text.substr(span.begin, span.end - span.begin), span.begin, &ids));
    }
  }
  if (add_special_tokens) post_processor_.apply(&ids);
  return ids;
}

Status Tokenizer::encode_piece(std::string_view text, size_t offset,
                               std::vector<int32_t>* ids) const {
  std::string normalized;
  if (normalizer_ != nullptr) {
    LS_ASSIGN_OR_RETURN(normalized, normalizer_->normalize(text));
  } else {
    normalized.assign(text);
  }
  const PieceSink to_model = [this, ids](Piece&& word) {
    model_->tokenize(word.text, ids);
    return ok_status();
  };
  for (const TextSpan& span : added_.split(normalized, /*normalized_text=*/true)) {
    if (span.token >= 0) {
      ids->push_back(span.token);
      continue;
    }
    Piece piece{normalized.substr(span.begin, span.end - span.begin),
                offset == 0 && span.begin == 0};
    if (pre_tokenizer_ == nullptr) {
      LS_RETURN_IF_ERROR(to_model(std::move(piece)));
    } else {
      LS_RETURN_IF_ERROR(pre_tokenizer_->pre_tokenize(std::move(piece), to_model));
    }
  }
  return ok_status();
}

Status Tokenizer::check_known_ids(std::span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!id_to_token(ids[i]).has_value()) {
      return invalid_argument_error(
          "token id {} (at index {}) is not in the vocabulary ({} ids, 0 to {})", ids[i], i,
          vocab_size_, vocab_size_ - 1);
    }
  }
  return ok_status();
}

Status Tokenizer::check_ids(std::span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return invalid_argument_error("token id {} (at index {}) is negative", ids[i], i);
    }
  }
  return ok_status();
}

Result<std::string> Tokenizer::decode(std::span<const int32_t> ids,
                                      bool skip_special_tokens) const {
  LS_RETURN_IF_ERROR(check_ids(ids));
  return decode_run(ids, skip_special_tokens, true, true);
}

Result<std::string> Tokenizer::decode_run(std::span<const int32_t> ids, bool skip_special_tokens,
                                          bool at_start, bool at_end) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* added = added_.find(id)) {
      if (!(skip_special_tokens && added->special)) tokens.push_back(added->content);
    } else if (const std::string* token = model_->id_to_token(id)) {
      tokens.push_back(*token);
    }
    // An id with no token (a vocabulary padded past the tokenizer's, or a gap in it) decodes to
    // nothing, as Hugging Face's decode skips it: a model may sample one.
  }
  return decoder_->decode(std::move(tokens), at_start, at_end);
}

Result<std::string> Tokenizer::token_bytes(int32_t id) const {
  LS_RETURN_IF_ERROR(check_ids(std::span<const int32_t>(&id, 1)));
  if (added_.find(id) == nullptr) {
    if (const std::string* token = model_->id_to_token(id)) {
      if (auto bytes = decoder_->raw_bytes(*token)) return *std::move(bytes);
    }
  }
  // As inside a text: no start-of-text rule strips a SentencePiece token's leading space.
  return decode_run(std::span<const int32_t>(&id, 1), /*skip_special_tokens=*/false,
                    /*at_start=*/false, /*at_end=*/false);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const AddedToken* added = added_.find(token)) return added->id;
  return model_->token_to_id(token);
}

std::optional<std::string_view> Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* added = added_.find(id)) return std::string_view(added->content);
  if (const std::string* token = model_->id_to_token(id)) return std::string_view(*token);
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* added = added_.find(id);
  return added != nullptr && added->special;
}

}  // namespace loraserve::tokenizer
