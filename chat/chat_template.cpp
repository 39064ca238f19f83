#include "chat/chat_template.h"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

#include "chat/jinja_interpreter.h"
#include "chat/jinja_parser.h"
#include "chat/unicode_text.h"
#include "common/excerpt.h"
#include "common/untrusted_file.h"
#include "common/untrusted_json.h"

namespace loraserve::chat {
namespace {

using ordered_json = nlohmann::ordered_json;

// Largest template source accepted (real ones are a few to tens of KB).
constexpr size_t kMaxTemplateBytes = 4u << 20;

// Reads a regular file of at most `max_bytes` (common/untrusted_file.h: a FIFO, a device or a
// link to one is refused unread); NOT_FOUND when absent.
Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  return read_regular_file(path, max_bytes, "the chat template's limit");
}

// tokenizer_config.json, special_tokens_map.json, chat_template.json: untrusted JSON, held to
// --max-json-bytes and --max-json-depth (common/untrusted_json.h).
Result<ordered_json> read_json(const std::string& path) {
  LS_ASSIGN_OR_RETURN(ordered_json json, read_json_file<ordered_json>(path));
  if (!json.is_object()) return invalid_argument_error("{}: not a JSON object", shown_path(path));
  return json;
}

// A special token's text: a string, or an AddedToken object's "content".
Result<std::optional<std::string>> token_text(const ordered_json& value, std::string_view file,
                                              std::string_view field) {
  if (value.is_null()) return std::optional<std::string>();
  if (value.is_string()) return std::optional<std::string>(value.get<std::string>());
  if (value.is_object()) {
    auto it = value.find("content");
    if (it != value.end() && it->is_string()) {
      return std::optional<std::string>(it->get<std::string>());
    }
  }
  return invalid_argument_error(
      "{}: \"{}\" must be a string or an object with a string "
      "\"content\"",
      file, field);
}

jinja::Value to_value(const ordered_json& json, int depth, const std::string& where) {
  using jinja::Value;
  if (depth > jinja::kMaxValueDepth) {
    throw jinja::TemplateError(
        "ValueError",
        fmt::format("a value nests deeper than {} levels, at {}", jinja::kMaxValueDepth, where));
  }
  switch (json.type()) {
    case ordered_json::value_t::null:
    case ordered_json::value_t::discarded:
      return Value::none();
    case ordered_json::value_t::boolean:
      return Value::boolean(json.get<bool>());
    case ordered_json::value_t::number_integer:
      return Value::integer(json.get<int64_t>());
    case ordered_json::value_t::number_unsigned: {
      const auto u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) {
        throw jinja::TemplateError("ValueError",
                                   fmt::format("{} holds the integer {}, which does not fit in 64 "
                                               "bits",
                                               where, u));
      }
      return Value::integer(static_cast<int64_t>(u));
    }
    case ordered_json::value_t::number_float:
      return Value::number(json.get<double>());
    case ordered_json::value_t::string: {
      const auto& s = json.get_ref<const std::string&>();
      if (!unicode::is_valid_utf8(s)) {
        throw jinja::TemplateError("ValueError", fmt::format("{} is not valid UTF-8", where));
      }
      return Value::string(s);
    }
    case ordered_json::value_t::binary:
      throw jinja::TemplateError("ValueError", fmt::format("{} is binary data", where));
    case ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(json.size());
      for (size_t i = 0; i < json.size(); ++i) {
        items.push_back(to_value(json[i], depth + 1, fmt::format("{}[{}]", where, i)));
      }
      return Value::list(std::move(items));
    }
    case ordered_json::value_t::object: {
      auto dict = std::make_shared<jinja::Dict>();
      for (const auto& [key, value] : json.items()) {
        if (!unicode::is_valid_utf8(key)) {
          throw jinja::TemplateError("ValueError",
                                     fmt::format("a key in {} is not valid UTF-8", where));
        }
        dict->set(Value::string(key), to_value(value, depth + 1, where + "." + key));
      }
      return Value::dict(std::move(dict));
    }
  }
  return Value::none();
}

std::string file_name(std::string_view path) {
  const size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

// A template error's text as a Status shows it. It may hold anything the template built or
// named (raise_exception's message, an unknown test's name...), so it is escaped (controls and
// bytes that are not UTF-8) and cut to kMaxDetailBytes, like any echo of input.
std::string shown_detail(std::string_view detail) {
  // Enough for any template's own message; a message that quotes input (a role of 3000 bytes)
  // shows an excerpt.
  constexpr size_t kMaxDetailBytes = 256;
  if (detail.size() <= kMaxDetailBytes) return escape_text(detail);
  return fmt::format("{}… ({} bytes)", escape_text(detail.substr(0, kMaxDetailBytes)),
                     detail.size());
}

}  // namespace

Result<SpecialTokens> SpecialTokens::from_config(const ordered_json& config,
                                                 const ordered_json& special_tokens_map,
                                                 std::string_view config_name) {
  SpecialTokens tokens;
  std::optional<std::string>* named[] = {&tokens.bos_token, &tokens.eos_token, &tokens.unk_token,
                                         &tokens.sep_token, &tokens.pad_token, &tokens.cls_token,
                                         &tokens.mask_token};
  const char* names[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                         "pad_token", "cls_token", "mask_token"};
  auto read_from = [&](const ordered_json& source, std::string_view file) -> Status {
    for (size_t i = 0; i < std::size(names); ++i) {
      auto it = source.find(names[i]);
      if (it == source.end()) continue;
      LS_ASSIGN_OR_RETURN(*named[i], token_text(*it, file, names[i]));
    }
    auto it = source.find("additional_special_tokens");
    if (it != source.end() && !it->is_null()) {
      if (!it->is_array()) {
        return invalid_argument_error("{}: \"additional_special_tokens\" must be a list", file);
      }
      for (const auto& item : *it) {
        LS_ASSIGN_OR_RETURN(std::optional<std::string> text,
                            token_text(item, file, "additional_special_tokens"));
        if (text && std::find(tokens.additional_special_tokens.begin(),
                              tokens.additional_special_tokens.end(),
                              *text) == tokens.additional_special_tokens.end()) {
          tokens.additional_special_tokens.push_back(*text);
        }
      }
    }
    return ok_status();
  };
  if (config.is_object()) LS_RETURN_IF_ERROR(read_from(config, config_name));
  // transformers reads special_tokens_map.json only for configs without added_tokens_decoder
  // (older tokenizers); its entries then win.
  const bool legacy = !config.is_object() || !config.contains("added_tokens_decoder");
  if (legacy && special_tokens_map.is_object()) {
    LS_RETURN_IF_ERROR(read_from(special_tokens_map, "special_tokens_map.json"));
  }
  return tokens;
}

ChatTemplate::ChatTemplate(std::string source, SpecialTokens tokens, const RenderLimits& limits,
                           std::string origin, std::unique_ptr<jinja::TemplateAst> ast)
    : source_(std::move(source)),
      tokens_(std::move(tokens)),
      limits_(limits),
      origin_(std::move(origin)),
      ast_(std::move(ast)),
      takes_content_lists_(source_takes_content_lists(source_)) {}

ChatTemplate::~ChatTemplate() = default;

namespace {

// The source cut into words (identifiers, numbers, the text of string literals) and single
// punctuation characters, whitespace dropped: a flat scan, linear in the source, for
// source_takes_content_lists (std::regex recursed once per character and overflowed the stack
// on 100 KB of whitespace inside a tag).
struct SourceToken {
  enum Kind { kWord, kString, kPunct } kind;
  std::string_view text;
};

std::vector<SourceToken> scan_source(std::string_view s) {
  std::vector<SourceToken> out;
  auto word_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
  };
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c)) != 0) {
      ++i;
    } else if (word_char(c)) {
      const size_t start = i;
      while (i < s.size() && word_char(s[i])) ++i;
      out.push_back({SourceToken::kWord, s.substr(start, i - start)});
    } else if (c == '\'' || c == '"') {
      const size_t end = s.find(c, i + 1);
      const size_t stop = end == std::string_view::npos ? s.size() : end;
      out.push_back({SourceToken::kString, s.substr(i + 1, stop - i - 1)});
      i = stop == s.size() ? stop : stop + 1;
    } else {
      out.push_back({SourceToken::kPunct, s.substr(i, 1)});
      ++i;
    }
  }
  return out;
}

}  // namespace

bool ChatTemplate::source_takes_content_lists(std::string_view source) {
  const std::vector<SourceToken> t = scan_source(source);
  const size_t n = t.size();
  auto is = [&](size_t i, SourceToken::Kind kind, std::string_view text = {}) {
    return i < n && t[i].kind == kind && (text.empty() || t[i].text == text);
  };
  auto word = [&](size_t i) { return is(i, SourceToken::kWord); };
  auto punct = [&](size_t i, std::string_view p) { return is(i, SourceToken::kPunct, p); };
  // The length of a message's content at i: x['content'], x["content"] or x.content; 0 if none.
  auto content_at = [&](size_t i) -> size_t {
    if (!word(i)) return 0;
    if (punct(i + 1, "[") && is(i + 2, SourceToken::kString, "content") && punct(i + 3, "]"))
      return 4;
    if (punct(i + 1, ".") && is(i + 2, SourceToken::kWord, "content")) return 3;
    return 0;
  };
  // Variables set from it as it is ({% set text = message['content'] %}).
  std::vector<std::string_view> aliases;
  for (size_t i = 0; i + 3 < n; ++i) {
    if (!is(i, SourceToken::kWord, "set") || !word(i + 1) || !punct(i + 2, "=")) continue;
    const size_t len = content_at(i + 3);
    const size_t after = i + 3 + len;
    if (len > 0 && (punct(after, "%") || (punct(after, "-") && punct(after + 1, "%"))))
      aliases.push_back(t[i + 1].text);
  }
  // The length of a content expression at i (an access, or a word naming an alias); 0 if none.
  auto target_at = [&](size_t i) -> size_t {
    if (const size_t len = content_at(i)) return len;
    if (word(i) && std::find(aliases.begin(), aliases.end(), t[i].text) != aliases.end()) return 1;
    return 0;
  };
  for (size_t i = 0; i < n; ++i) {
    // for x in TARGET / for k, v in TARGET
    if (is(i, SourceToken::kWord, "for") && word(i + 1)) {
      size_t j = i + 2;
      if (punct(j, ",") && word(j + 1)) j += 2;
      if (is(j, SourceToken::kWord, "in") && target_at(j + 1) > 0) return true;
    }
    const size_t len = target_at(i);
    if (len == 0) continue;
    const size_t after = i + len;
    // TARGET | selectattr(...) / map / first / last / rejectattr
    if (punct(after, "|") && word(after + 1)) {
      const std::string_view f = t[after + 1].text;
      if (f == "selectattr" || f == "rejectattr" || f == "map" || f == "first" || f == "last")
        return true;
    }
    // TARGET[0] / TARGET[-1]
    if (punct(after, "[")) {
      const size_t k = punct(after + 1, "-") ? after + 2 : after + 1;
      if (word(k) && std::isdigit(static_cast<unsigned char>(t[k].text[0])) != 0) return true;
    }
  }
  return false;
}

Result<std::unique_ptr<ChatTemplate>> ChatTemplate::parse(std::string source, SpecialTokens tokens,
                                                          const RenderLimits& limits,
                                                          std::string origin) {
  if (source.size() > kMaxTemplateBytes) {
    return invalid_argument_error("{}: {} bytes, more than the {} a chat template may have", origin,
                                  source.size(), kMaxTemplateBytes);
  }
  if (!unicode::is_valid_utf8(source)) {
    return invalid_argument_error("{}: not valid UTF-8", origin);
  }
  try {
    auto ast = std::make_unique<jinja::TemplateAst>(jinja::parse(source));
    return std::unique_ptr<ChatTemplate>(new ChatTemplate(
        std::move(source), std::move(tokens), limits, std::move(origin), std::move(ast)));
  } catch (const jinja::TemplateError& e) {
    return invalid_argument_error("{} line {}: {}: {}", origin, e.line(), e.kind(),
                                  shown_detail(e.detail()));
  }
}

Result<std::unique_ptr<ChatTemplate>> ChatTemplate::load(const std::string& model_dir,
                                                         const RenderLimits& limits) {
  const std::string config_path = model_dir + "/tokenizer_config.json";
  ordered_json config = nullptr;
  if (Result<ordered_json> read = read_json(config_path); read.ok()) {
    config = std::move(read).value();
  } else if (read.status().code() != StatusCode::kNotFound) {
    return read.status();
  }
  ordered_json special_tokens_map = nullptr;
  if (Result<ordered_json> read = read_json(model_dir + "/special_tokens_map.json"); read.ok()) {
    special_tokens_map = std::move(read).value();
  } else if (read.status().code() != StatusCode::kNotFound) {
    return read.status();
  }
  LS_ASSIGN_OR_RETURN(SpecialTokens tokens,
                      SpecialTokens::from_config(config, special_tokens_map, config_path));

  std::string source, origin;
  const std::string jinja_path = model_dir + "/chat_template.jinja";
  if (Result<std::string> read = read_file(jinja_path, kMaxTemplateBytes); read.ok()) {
    source = std::move(read).value();
    origin = jinja_path;
  } else if (read.status().code() != StatusCode::kNotFound) {
    return read.status();
  } else if (config.is_object() && config.contains("chat_template") &&
             !config["chat_template"].is_null()) {
    const ordered_json& value = config["chat_template"];
    origin = config_path + ": chat_template";
    if (value.is_string()) {
      source = value.get<std::string>();
    } else if (value.is_array()) {
      bool found = false;
      std::string names;
      for (const auto& entry : value) {
        if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
            !entry.contains("template") || !entry["template"].is_string()) {
          return invalid_argument_error(
              "{}: \"chat_template\" must be a string or a list of "
              "{{\"name\", \"template\"}} objects",
              config_path);
        }
        const std::string name = entry["name"].get<std::string>();
        names += (names.empty() ? "" : ", ") + name;
        if (name == "default") {
          source = entry["template"].get<std::string>();
          origin = config_path + ": chat_template \"default\"";
          found = true;
        }
      }
      if (!found) {
        return invalid_argument_error(
            "{}: the named chat templates ({}) include none named "
            "\"default\"",
            config_path, names);
      }
    } else {
      return invalid_argument_error(
          "{}: \"chat_template\" must be a string or a list of {{\"name\", \"template\"}} objects",
          config_path);
    }
  } else {
    const std::string processor_path = model_dir + "/chat_template.json";
    Result<ordered_json> read = read_json(processor_path);
    if (!read.ok() && read.status().code() != StatusCode::kNotFound) return read.status();
    if (!read.ok() || !read->contains("chat_template") || !(*read)["chat_template"].is_string()) {
      return not_found_error(
          "{} has no chat template (no chat_template.jinja, no "
          "\"chat_template\" in tokenizer_config.json)",
          model_dir);
    }
    source = (*read)["chat_template"].get<std::string>();
    origin = processor_path + ": chat_template";
  }
  return parse(std::move(source), std::move(tokens), limits, std::move(origin));
}

Result<std::string> ChatTemplate::render(const ordered_json& messages, bool add_generation_prompt,
                                         const ordered_json& extra_context) const {
  if (!messages.is_array()) return invalid_argument_error("messages must be an array");
  if (!extra_context.is_null() && !extra_context.is_object()) {
    return invalid_argument_error("the chat template's extra context must be a JSON object");
  }
  std::vector<std::pair<std::string, jinja::Value>> variables;
  try {
    variables.emplace_back("messages", to_value(messages, 1, "messages"));
    variables.emplace_back("tools", jinja::Value::none());
    variables.emplace_back("documents", jinja::Value::none());
    variables.emplace_back("add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
    auto set = [&variables](const std::string& name, jinja::Value value) {
      for (auto& [key, existing] : variables) {
        if (key == name) {
          existing = std::move(value);
          return;
        }
      }
      variables.emplace_back(name, std::move(value));
    };
    const std::pair<const char*, const std::optional<std::string>*> named[] = {
        {"bos_token", &tokens_.bos_token},  {"eos_token", &tokens_.eos_token},
        {"unk_token", &tokens_.unk_token},  {"sep_token", &tokens_.sep_token},
        {"pad_token", &tokens_.pad_token},  {"cls_token", &tokens_.cls_token},
        {"mask_token", &tokens_.mask_token}};
    for (const auto& [name, token] : named) {
      // transformers' special_tokens_map leaves out unset and empty tokens.
      if (*token && !(*token)->empty()) set(name, jinja::Value::string(**token));
    }
    if (!tokens_.additional_special_tokens.empty()) {
      std::vector<jinja::Value> list;
      for (const std::string& t : tokens_.additional_special_tokens) {
        list.push_back(jinja::Value::string(t));
      }
      set("additional_special_tokens", jinja::Value::list(std::move(list)));
    }
    if (extra_context.is_object()) {
      for (const auto& [key, value] : extra_context.items()) {
        if (key == "messages" || key == "add_generation_prompt") {
          return invalid_argument_error("the chat template's extra context may not set \"{}\"",
                                        key);
        }
        set(key, to_value(value, 1, key));
      }
    }
  } catch (const jinja::TemplateError& e) {
    return invalid_argument_error("{}", shown_detail(e.detail()));
  }
  try {
    jinja::Interpreter interpreter(limits_);
    return interpreter.render(*ast_, std::move(variables));
  } catch (const jinja::TemplateError& e) {
    return invalid_argument_error("{} line {}: {}: {}", file_name(origin_), e.line(), e.kind(),
                                  shown_detail(e.detail()));
  } catch (const std::exception& e) {
    return invalid_argument_error("{}: rendering failed: {}", file_name(origin_),
                                  shown_detail(e.what()));
  }
}

}  // namespace loraserve::chat
