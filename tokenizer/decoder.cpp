#include "tokenizer/decoder.h"

#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

std::string join(const std::vector<std::string>& tokens, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) out.append(separator);
    out.append(tokens[i]);
  }
  return out;
}

// Without a decoder, Hugging Face joins the tokens with spaces; a later run starts with one.
class JoinWithSpaces : public DecoderStep {
 public:
  Status apply(std::vector<std::string>* tokens, bool at_start, bool) const override {
    if (tokens->empty()) return ok_status();
    std::string text = at_start ? std::string() : std::string(" ");
    text.append(join(*tokens, " "));
    *tokens = {std::move(text)};
    return ok_status();
  }
};

// The bytes a byte-level token's characters stand for; nullopt when one is not in the alphabet.
std::optional<std::string> byte_level_bytes(std::string_view token) {
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
  std::string bytes;
  size_t pos = 0;
  while (pos < token.size()) {
    const std::optional<uint8_t> b = alphabet.decode(next_code_point(token, &pos));
    if (!b) return std::nullopt;
    bytes.push_back(static_cast<char>(*b));
  }
  return bytes;
}

// The byte of a "<0xAB>" token. REQUIRES: Decoder::is_byte_token(token).
char byte_token_value(std::string_view token) {
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  return static_cast<char>(hex(token[3]) * 16 + hex(token[4]));
}

// Byte-level characters back to bytes (a token with other characters keeps its own bytes), then
// the bytes of all tokens as one string, ill-formed sequences replaced by U+FFFD.
class ByteLevelStep : public DecoderStep {
 public:
  Status apply(std::vector<std::string>* tokens, bool, bool) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      const std::optional<std::string> mapped = byte_level_bytes(token);
      bytes.append(mapped ? *mapped : token);
    }
    *tokens = {decode_utf8_lossy(bytes)};
    return ok_status();
  }
};

class ReplaceStep : public DecoderStep {
 public:
  ReplaceStep(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  Status apply(std::vector<std::string>* tokens, bool, bool) const override {
    for (std::string& token : *tokens) {
      LS_ASSIGN_OR_RETURN(token, pattern_->replace_all(token, content_));
    }
    return ok_status();
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

// Runs of <0xXX> tokens become the string of their bytes; an ill-formed run becomes one U+FFFD
// per byte (as Hugging Face's ByteFallback).
class ByteFallbackStep : public DecoderStep {
 public:
  Status apply(std::vector<std::string>* tokens, bool, bool) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      if (find_invalid_utf8(run).has_value()) {
        std::string replaced;
        for (size_t i = 0; i < run.size(); ++i) replaced.append(kReplacementUtf8);
        out.push_back(std::move(replaced));
      } else {
        out.push_back(run);
      }
      run.clear();
    };
    for (std::string& token : *tokens) {
      if (Decoder::is_byte_token(token)) {
        run.push_back(byte_token_value(token));
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    *tokens = std::move(out);
    return ok_status();
  }
};

class FuseStep : public DecoderStep {
 public:
  Status apply(std::vector<std::string>* tokens, bool, bool) const override {
    *tokens = {join(*tokens, "")};
    return ok_status();
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters from every token; on
// the fused text (`whole_text`) only at the start and end of the sequence.
class StripStep : public DecoderStep {
 public:
  StripStep(char32_t content, int64_t start, int64_t stop, bool whole_text)
      : content_(content), start_(start), stop_(stop), whole_text_(whole_text) {}
  Status apply(std::vector<std::string>* tokens, bool at_start, bool at_end) const override {
    for (std::string& token : *tokens) {
      std::vector<char32_t> chars;
      size_t pos = 0;
      while (pos < token.size()) chars.push_back(next_code_point(token, &pos));
      size_t begin = 0, end = chars.size();
      if (!whole_text_ || at_start) {
        for (int64_t i = 0; i < start_ && begin < end && chars[begin] == content_; ++i) ++begin;
      }
      if (!whole_text_ || at_end) {
        for (int64_t i = 0; i < stop_ && end > begin && chars[end - 1] == content_; ++i) --end;
      }
      std::string out;
      for (size_t i = begin; i < end; ++i) append_utf8(chars[i], &out);
      token = std::move(out);
    }
    return ok_status();
  }

 private:
  char32_t content_;
  int64_t start_, stop_;
  bool whole_text_;
};

// The replacement character becomes a space, except in the first token of the sequence (unless
// prepend_scheme is "never"), where it is dropped.
class MetaspaceStep : public DecoderStep {
 public:
  MetaspaceStep(std::string replacement, bool drop_in_first)
      : replacement_(std::move(replacement)), drop_in_first_(drop_in_first) {}
  Status apply(std::vector<std::string>* tokens, bool at_start, bool) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& token = (*tokens)[i];
      const std::string_view with = i == 0 && at_start && drop_in_first_ ? "" : " ";
      std::string out;
      size_t prev = 0;
      for (size_t at = token.find(replacement_); at != std::string::npos;
           at = token.find(replacement_, prev)) {
        out.append(token, prev, at - prev);
        out.append(with);
        prev = at + replacement_.size();
      }
      out.append(token, prev, std::string::npos);
      token = std::move(out);
    }
    return ok_status();
  }

 private:
  std::string replacement_;
  bool drop_in_first_;
};

}  // namespace

bool Decoder::is_byte_token(std::string_view token) {
  auto hex = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  };
  return token.size() == 6 && token.substr(0, 3) == "<0x" && token[5] == '>' && hex(token[3]) &&
         hex(token[4]);
}

Result<std::unique_ptr<Decoder>> Decoder::from_json(const json& config, const std::string& path) {
  std::unique_ptr<Decoder> decoder(new Decoder());
  if (config.is_null()) {
    decoder->steps_.push_back(std::make_unique<JoinWithSpaces>());
    return decoder;
  }
  LS_RETURN_IF_ERROR(decoder->add_steps(config, path));
  return decoder;
}

Status Decoder::add_steps(const json& config, const std::string& path) {
  LS_RETURN_IF_ERROR(expect_object(config, path));
  LS_ASSIGN_OR_RETURN(std::string type, string_field(config, "type", path));
  if (type == "Sequence") {
    const std::string list_path = field_path(path, "decoders");
    const json* list = find_field(config, "decoders");
    if (list == nullptr || !list->is_array()) {
      return invalid_argument_error("{}: expected a list of decoders", list_path);
    }
    for (size_t i = 0; i < list->size(); ++i) {
      LS_RETURN_IF_ERROR(add_steps((*list)[i], element_path(list_path, i)));
    }
    return ok_status();
  }
  if (type == "ByteLevel") {
    steps_.push_back(std::make_unique<ByteLevelStep>());
    fused_ = true;
    byte_level_ = true;
    return ok_status();
  }
  if (type == "Fuse") {
    steps_.push_back(std::make_unique<FuseStep>());
    fused_ = true;
    return ok_status();
  }
  if (type == "ByteFallback") {
    steps_.push_back(std::make_unique<ByteFallbackStep>());
    byte_fallback_ = byte_fallback_ || !fused_;
    byte_tokens_ = true;
    return ok_status();
  }
  if (type == "Replace") {
    const json* pattern = find_field(config, "pattern");
    if (pattern == nullptr)
      return invalid_argument_error("{}: missing", field_path(path, "pattern"));
    LS_ASSIGN_OR_RETURN(auto regex, make_pattern(*pattern, field_path(path, "pattern")));
    LS_ASSIGN_OR_RETURN(std::string content, string_field(config, "content", path));
    // On the fused text a pattern longer than one character could match across runs.
    const json* literal = find_field(*pattern, "String");
    const bool one_char = literal != nullptr && literal->is_string() &&
                          utf8_length(literal->get_ref<const std::string&>()[0]) ==
                              literal->get_ref<const std::string&>().size();
    if (fused_ && !one_char) runs_compose_ = prefix_stable_ = false;
    steps_.push_back(std::make_unique<ReplaceStep>(std::move(regex), std::move(content)));
    return ok_status();
  }
  if (type == "Strip") {
    LS_ASSIGN_OR_RETURN(char32_t content, single_char_field(config, "content", path));
    LS_ASSIGN_OR_RETURN(int64_t start, int_field(config, "start", 0, path));
    LS_ASSIGN_OR_RETURN(int64_t stop, int_field(config, "stop", 0, path));
    if (start < 0 || stop < 0) {
      return invalid_argument_error("{}: start and stop must not be negative", path);
    }
    if (fused_ && stop > 0) end_strip_char_ = content;
    steps_.push_back(std::make_unique<StripStep>(content, start, stop, fused_));
    return ok_status();
  }
  if (type == "Metaspace") {
    LS_ASSIGN_OR_RETURN(MetaspaceSettings m, parse_metaspace(config, path));
    const bool drop_in_first = m.scheme != PrependScheme::kNever;
    if (fused_) runs_compose_ = false;  // the "first token" would be the whole text
    steps_.push_back(std::make_unique<MetaspaceStep>(std::move(m.replacement_utf8), drop_in_first));
    return ok_status();
  }
  return invalid_argument_error(
      "{}: unsupported decoder type {} (supported: ByteLevel, Replace, ByteFallback, Fuse, "
      "Strip, "
      "Metaspace, Sequence)",
      field_path(path, "type"), excerpt(type));
}

std::optional<std::string> Decoder::raw_bytes(std::string_view token) const {
  if (byte_level_) {
    if (auto bytes = byte_level_bytes(token)) return bytes;
  }
  if (byte_tokens_ && is_byte_token(token)) return std::string(1, byte_token_value(token));
  return std::nullopt;
}

Result<std::string> Decoder::decode(std::vector<std::string> tokens, bool at_start,
                                    bool at_end) const {
  for (const auto& step : steps_) LS_RETURN_IF_ERROR(step->apply(&tokens, at_start, at_end));
  return join(tokens, "");
}

}  // namespace loraserve::tokenizer
