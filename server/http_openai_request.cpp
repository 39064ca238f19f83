#include "server/http_openai_request.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "common/excerpt.h"
#include "common/untrusted_json.h"

namespace loraserve::server {
namespace {

using json = nlohmann::ordered_json;
using Error = std::optional<RequestError>;

template <typename... Args>
Error bad(std::string param, fmt::format_string<Args...> format, Args&&... args) {
  return RequestError{invalid_argument_error(format, std::forward<Args>(args)...),
                      std::move(param)};
}

// The field, or nullptr when it is absent or null.
const json* field(const json& object, const std::string& name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

// An integer value (a float without a fraction counts, as OpenAI's own validation allows).
std::optional<int64_t> as_integer(const json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9.0e15)
      return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

Error get_int(const json& body, const std::string& name, int64_t lo, int64_t hi,
              std::optional<int64_t>* out) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  const auto i = as_integer(*v);
  if (!i) return bad(name, "'{}' must be an integer", name);
  if (*i < lo || *i > hi) return bad(name, "'{}' must be in [{}, {}], got {}", name, lo, hi, *i);
  *out = *i;
  return std::nullopt;
}

Error get_number(const json& body, const std::string& name, std::optional<double>* out) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return bad(name, "'{}' must be a number", name);
  *out = v->get<double>();
  return std::nullopt;
}

Error get_bool(const json& body, const std::string& name, bool* out) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return bad(name, "'{}' must be true or false", name);
  *out = v->get<bool>();
  return std::nullopt;
}

Error get_token_ids(const json& v, const std::string& name, std::vector<int32_t>* out) {
  out->reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const auto id = as_integer(v[i]);
    if (!id || *id < 0 || *id > std::numeric_limits<int32_t>::max())
      return bad(name, "'{}[{}]' must be a token id (an integer >= 0)", name, i);
    out->push_back(static_cast<int32_t>(*id));
  }
  return std::nullopt;
}

// A number in [lo, hi], into *out when present.
Error get_in_range(const json& body, const char* name, double lo, double hi, float* out) {
  std::optional<double> v;
  if (auto e = get_number(body, name, &v)) return e;
  if (!v) return std::nullopt;
  if (!(*v >= lo && *v <= hi))
    return bad(name, "'{}' must be in [{}, {}], got {}", name, lo, hi, *v);
  *out = static_cast<float>(*v);
  return std::nullopt;
}

// vLLM's penalties (OpenAI's ranges where OpenAI has the field), min_p, min_tokens and
// OpenAI's logit_bias: {"token id": bias in [-100, 100]}.
Error get_penalties(const json& body, engine::SamplingParams* p) {
  if (auto e = get_in_range(body, "presence_penalty", -2, 2, &p->presence_penalty)) return e;
  if (auto e = get_in_range(body, "frequency_penalty", -2, 2, &p->frequency_penalty)) return e;
  if (auto e = get_in_range(body, "min_p", 0, 1, &p->min_p)) return e;
  std::optional<double> repetition;
  if (auto e = get_number(body, "repetition_penalty", &repetition)) return e;
  if (repetition) {
    if (!(*repetition > 0 && *repetition <= std::numeric_limits<float>::max())) {
      return bad("repetition_penalty",
                 "'repetition_penalty' must be a number > 0 (1 is off), got {}", *repetition);
    }
    p->repetition_penalty = static_cast<float>(*repetition);
  }
  std::optional<int64_t> min_tokens;
  if (auto e = get_int(body, "min_tokens", 0, std::numeric_limits<int32_t>::max(), &min_tokens))
    return e;
  if (min_tokens) p->min_tokens = static_cast<int32_t>(*min_tokens);
  const json* bias = field(body, "logit_bias");
  if (bias == nullptr) return std::nullopt;
  if (!bias->is_object())
    return bad("logit_bias", "'logit_bias' must be an object of token id -> bias");
  for (const auto& [key, value] : bias->items()) {
    int64_t id = 0;
    const bool digits =
        !key.empty() && key.size() <= 10 &&
        std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) id = std::stoll(key);
    if (!digits || id > std::numeric_limits<int32_t>::max()) {
      return bad("logit_bias", "'logit_bias' key {} is not a token id (an integer >= 0)",
                 excerpt(key, 24));
    }
    if (!value.is_number() || !(value.get<double>() >= -100 && value.get<double>() <= 100)) {
      return bad("logit_bias", "'logit_bias' of token {} must be a number in [-100, 100]", id);
    }
    p->logit_bias.emplace_back(static_cast<int32_t>(id), value.get<float>());
  }
  return std::nullopt;
}

// Fields that change what is generated and that loraserve does not implement: refused when set
// to anything but their neutral value, so a client never gets an answer it did not ask for.
Error refuse_unsupported(const json& body, bool chat) {
  auto integer_not = [&](const char* name, int64_t neutral) -> Error {
    const json* v = field(body, name);
    if (v == nullptr) return std::nullopt;
    const auto i = as_integer(*v);
    if (!i) return bad(name, "'{}' must be an integer", name);
    if (*i != neutral) return bad(name, "'{}' {} is not supported (only {})", name, *i, neutral);
    return std::nullopt;
  };
  auto true_refused = [&](const char* name) -> Error {
    bool value = false;
    if (auto e = get_bool(body, name, &value)) return e;
    if (value) return bad(name, "'{}': true is not supported", name);
    return std::nullopt;
  };
  auto present_refused = [&](const char* name) -> Error {
    const json* v = field(body, name);
    if (v == nullptr) return std::nullopt;
    if ((v->is_array() || v->is_object() || v->is_string()) && v->empty()) return std::nullopt;
    return bad(name, "'{}' is not supported", name);
  };
  for (auto check : {integer_not("best_of", 1), true_refused("echo"),
                     true_refused("use_beam_search"), present_refused("prompt_logprobs"),
                     present_refused("truncate_prompt_tokens"), present_refused("bad_words"),
                     present_refused("prompt_embeds"), present_refused("guided_json"),
                     present_refused("guided_regex"), present_refused("guided_choice"),
                     present_refused("guided_grammar"), present_refused("structured_outputs")}) {
    if (check) return check;
  }
  if (!chat) {
    if (auto e = present_refused("suffix")) return e;
    return std::nullopt;
  }
  for (auto check :
       {present_refused("tools"), present_refused("functions"), present_refused("function_call"),
        present_refused("audio"), present_refused("prediction"),
        present_refused("web_search_options"), present_refused("documents"),
        present_refused("chat_template"), true_refused("continue_final_message")}) {
    if (check) return check;
  }
  if (const json* v = field(body, "tool_choice")) {
    if (!(v->is_string() && (*v == "none" || *v == "auto")))
      return bad("tool_choice", "'tool_choice' is not supported (no tools)");
  }
  if (const json* v = field(body, "response_format")) {
    const json* type = v->is_object() ? field(*v, "type") : nullptr;
    if (type == nullptr || !type->is_string() || *type != "text")
      return bad("response_format",
                 "'response_format' other than {{\"type\": \"text\"}} is not supported");
  }
  if (const json* v = field(body, "modalities")) {
    if (!v->is_array() || v->size() != 1 || (*v)[0] != "text")
      return bad("modalities", "'modalities' other than [\"text\"] is not supported");
  }
  return std::nullopt;
}

Error parse_prompt(const json& body, OpenAiRequest* out) {
  const json* p = field(body, "prompt");
  if (p == nullptr) return bad("prompt", "'prompt' is required");
  if (p->is_string()) {
    out->prompts.emplace_back(p->get<std::string>());
    return std::nullopt;
  }
  if (!p->is_array() || p->empty())
    return bad("prompt",
               "'prompt' must be a string, a list of token ids, or a non-empty list of strings "
               "or of token-id lists");
  const json& first = (*p)[0];
  if (first.is_number()) {
    std::vector<int32_t> ids;
    if (auto e = get_token_ids(*p, "prompt", &ids)) return e;
    out->prompts.emplace_back(std::move(ids));
    return std::nullopt;
  }
  if (p->size() > kMaxPromptsPerRequest)
    return bad("prompt", "'prompt' holds {} prompts; at most {} per request", p->size(),
               kMaxPromptsPerRequest);
  for (size_t i = 0; i < p->size(); ++i) {
    const json& item = (*p)[i];
    const std::string name = fmt::format("prompt[{}]", i);
    if (item.is_string() && first.is_string()) {
      out->prompts.emplace_back(item.get<std::string>());
    } else if (item.is_array() && first.is_array()) {
      std::vector<int32_t> ids;
      if (auto e = get_token_ids(item, name, &ids)) return e;
      out->prompts.emplace_back(std::move(ids));
    } else {
      return bad(name, "'{}': a list of prompts holds only strings or only token-id lists", name);
    }
  }
  return std::nullopt;
}

Error parse_messages(const json& body, OpenAiRequest* out) {
  const json* m = field(body, "messages");
  if (m == nullptr || !m->is_array() || m->empty())
    return bad("messages", "'messages' must be a non-empty list of messages");
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string at = fmt::format("messages[{}]", i);
    if (!msg.is_object()) return bad(at, "'{}' must be an object", at);
    ChatMessage cm;
    const json* role = field(msg, "role");
    if (role == nullptr || !role->is_string() || role->get_ref<const std::string&>().empty())
      return bad(at + ".role", "'{}.role' must be a non-empty string", at);
    cm.role = role->get<std::string>();
    if (cm.role == "tool" || cm.role == "function")
      return bad(at + ".role", "'{}.role' '{}' is not supported (no tools)", at, cm.role);
    if (const json* calls = field(msg, "tool_calls"); calls != nullptr && !calls->empty())
      return bad(at + ".tool_calls", "'{}.tool_calls' is not supported (no tools)", at);
    if (const json* name = field(msg, "name")) {
      if (!name->is_string()) return bad(at + ".name", "'{}.name' must be a string", at);
      cm.name = name->get<std::string>();
    }
    const json* content = field(msg, "content");
    if (content == nullptr) {
      // OpenAI allows a null content only beside tool calls, which are refused above.
      return bad(at + ".content", "'{}.content' is required", at);
    }
    if (content->is_string()) {
      cm.content = content->get<std::string>();
    } else if (content->is_array()) {
      // Text parts joined by newlines, as vLLM gives them to templates that take a string.
      cm.parts.emplace();
      for (size_t j = 0; j < content->size(); ++j) {
        const json& part = (*content)[j];
        const std::string pat = fmt::format("{}.content[{}]", at, j);
        const json* type = part.is_object() ? field(part, "type") : nullptr;
        if (type == nullptr || !type->is_string())
          return bad(pat + ".type", "'{}' must be an object with a 'type'", pat);
        if (*type != "text")
          return bad(pat + ".type", "'{}.type' {} is not supported (only text)", pat,
                     excerpt(type->get_ref<const std::string&>(), 40));
        const json* text = field(part, "text");
        if (text == nullptr || !text->is_string())
          return bad(pat + ".text", "'{}.text' must be a string", pat);
        if (j > 0) cm.content += "\n";
        cm.content += text->get_ref<const std::string&>();
        cm.parts->push_back(text->get<std::string>());
      }
    } else {
      return bad(at + ".content", "'{}.content' must be a string or a list of text parts", at);
    }
    out->messages.push_back(std::move(cm));
  }
  return std::nullopt;
}

Error parse_sampling(const json& body, bool chat, OpenAiRequest* out) {
  engine::SamplingParams& p = out->params;
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
  std::optional<int64_t> max_tokens;
  if (auto e = get_int(body, "max_tokens", kInt32Min, kInt32Max, &max_tokens)) return e;
  if (chat) {
    std::optional<int64_t> max_completion;
    if (auto e = get_int(body, "max_completion_tokens", kInt32Min, kInt32Max, &max_completion))
      return e;
    if (max_completion) max_tokens = max_completion;
  } else if (!max_tokens) {
    max_tokens = kCompletionsDefaultMaxTokens;
  }
  if (max_tokens) p.max_tokens = static_cast<int32_t>(*max_tokens);

  std::optional<double> number;
  if (auto e = get_number(body, "temperature", &number)) return e;
  if (number) p.temperature = static_cast<float>(*number);
  number.reset();
  if (auto e = get_number(body, "top_p", &number)) return e;
  if (number) p.top_p = static_cast<float>(*number);
  std::optional<int64_t> integer;
  if (auto e = get_int(body, "top_k", kInt32Min, kInt32Max, &integer)) return e;
  if (integer) p.top_k = *integer == -1 ? 0 : static_cast<int32_t>(*integer);  // vLLM: -1 is off
  if (auto e = get_penalties(body, &p)) return e;
  integer.reset();
  if (auto e = get_int(body, "n", 1, kMaxPromptsPerRequest, &integer)) return e;
  if (integer) out->n = static_cast<int32_t>(*integer);

  if (const json* seed = field(body, "seed")) {
    if (seed->is_number_unsigned()) {
      p.seed = seed->get<uint64_t>();
    } else if (const auto s = as_integer(*seed)) {
      p.seed = static_cast<uint64_t>(*s);
    } else {
      return bad("seed", "'seed' must be an integer");
    }
  }

  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      p.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) return bad("stop", "'stop[{}]' must be a string", i);
        p.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      return bad("stop", "'stop' must be a string or a list of strings");
    }
  }
  if (const json* ids = field(body, "stop_token_ids")) {
    if (!ids->is_array()) return bad("stop_token_ids", "'stop_token_ids' must be a list");
    if (auto e = get_token_ids(*ids, "stop_token_ids", &p.stop_token_ids)) return e;
  }
  if (const json* ids = field(body, "allowed_token_ids")) {
    if (!ids->is_array() || ids->empty())
      return bad("allowed_token_ids", "'allowed_token_ids' must be a non-empty list of token ids");
    if (auto e = get_token_ids(*ids, "allowed_token_ids", &p.allowed_token_ids)) return e;
  }
  if (auto e = get_bool(body, "ignore_eos", &p.ignore_eos)) return e;
  if (auto e = get_bool(body, "skip_special_tokens", &p.skip_special_tokens)) return e;
  if (auto e = get_bool(body, "include_stop_str_in_output", &p.include_stop_str_in_output))
    return e;

  if (chat) {
    if (auto e = get_bool(body, "logprobs", &out->logprobs)) return e;
    integer.reset();
    if (auto e = get_int(body, "top_logprobs", 0, engine::kMaxLogprobs, &integer)) return e;
    if (integer && !out->logprobs)
      return bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    out->top_logprobs = integer ? static_cast<int32_t>(*integer) : 0;
  } else {
    integer.reset();
    if (auto e = get_int(body, "logprobs", 0, engine::kMaxLogprobs, &integer)) return e;
    out->logprobs = integer.has_value();
    out->top_logprobs = integer ? static_cast<int32_t>(*integer) : 0;
  }
  p.logprobs = out->top_logprobs;
  p.want_logprob = out->logprobs;
  return std::nullopt;
}

// The body as a JSON object, within the untrusted-JSON caps and with no integer past 64 bits (one
// would otherwise reach a template as a double).
Result<json> parse_body(std::string_view text) {
  LS_ASSIGN_OR_RETURN(json body, parse_untrusted_json<json>(text, "the request body"));
  LS_RETURN_IF_ERROR(check_json_integers(text, "the request body"));
  if (!body.is_object()) return invalid_argument_error("the request body must be a JSON object");
  return body;
}

// A completion (`chat` false) or chat request from its parsed body.
std::variant<OpenAiRequest, RequestError> read_openai_request(const json& body, bool chat) {
  OpenAiRequest out;
  out.chat = chat;
  out.add_special_tokens = !chat;
  if (const json* model = field(body, "model")) {
    if (!model->is_string())
      return RequestError{invalid_argument_error("'model' must be a string"), "model"};
    out.model = model->get<std::string>();
  }
  if (auto e = refuse_unsupported(body, chat)) return *e;
  if (auto e = chat ? parse_messages(body, &out) : parse_prompt(body, &out)) return *e;
  if (auto e = get_bool(body, "add_special_tokens", &out.add_special_tokens)) return *e;
  if (chat) {
    if (auto e = get_bool(body, "add_generation_prompt", &out.add_generation_prompt)) return *e;
    if (const json* kwargs = field(body, "chat_template_kwargs")) {
      if (!kwargs->is_object())
        return RequestError{invalid_argument_error("'chat_template_kwargs' must be an object"),
                            "chat_template_kwargs"};
      out.chat_template_kwargs = *kwargs;
    }
  }
  if (auto e = parse_sampling(body, chat, &out)) return *e;
  const size_t choices = (chat ? 1 : out.prompts.size()) * static_cast<size_t>(out.n);
  if (choices > kMaxPromptsPerRequest) {
    return *bad("n", "'n' {} times {} prompts is {} choices; at most {} per request", out.n,
                chat ? 1 : out.prompts.size(), choices, kMaxPromptsPerRequest);
  }
  if (auto e = get_bool(body, "stream", &out.stream)) return *e;
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object())
      return RequestError{invalid_argument_error("'stream_options' must be an object"),
                          "stream_options"};
    if (const json* usage = field(*so, "include_usage")) {
      if (!usage->is_boolean())
        return *bad("stream_options.include_usage",
                    "'stream_options.include_usage' must be true or false");
      out.include_usage = usage->get<bool>();
    }
  }
  if (auto e = get_bool(body, "return_token_ids", &out.return_token_ids)) return *e;
  return out;
}

}  // namespace

std::variant<OpenAiRequest, RequestError> parse_openai_request(std::string_view text, bool chat) {
  auto body = parse_body(text);
  if (!body.ok()) return RequestError{body.status(), ""};
  return read_openai_request(*body, chat);
}

std::variant<TokenizeRequest, RequestError> parse_tokenize_request(std::string_view text) {
  auto body = parse_body(text);
  if (!body.ok()) return RequestError{body.status(), ""};
  const bool chat = field(*body, "messages") != nullptr;
  auto parsed = read_openai_request(*body, chat);
  if (auto* e = std::get_if<RequestError>(&parsed)) return std::move(*e);
  TokenizeRequest out{std::move(std::get<OpenAiRequest>(parsed)), false};
  if (!chat && (out.request.prompts.size() != 1 ||
                !std::holds_alternative<std::string>(out.request.prompts[0]))) {
    return *bad("prompt", "'prompt' must be one string (or send 'messages')");
  }
  if (auto e = get_bool(*body, "return_token_strs", &out.return_token_strs)) return *e;
  return out;
}

std::variant<DetokenizeRequest, RequestError> parse_detokenize_request(std::string_view text) {
  auto body = parse_body(text);
  if (!body.ok()) return RequestError{body.status(), ""};
  DetokenizeRequest out;
  if (const json* model = field(*body, "model")) {
    if (!model->is_string()) return *bad("model", "'model' must be a string");
    out.model = model->get<std::string>();
  }
  const json* tokens = field(*body, "tokens");
  if (tokens == nullptr || !tokens->is_array())
    return *bad("tokens", "'tokens' must be a list of token ids");
  if (auto e = get_token_ids(*tokens, "tokens", &out.tokens)) return *e;
  return out;
}

json chat_template_messages(const OpenAiRequest& request, bool content_lists) {
  json messages = json::array();
  for (const ChatMessage& m : request.messages) {
    json message = {{"role", m.role}, {"content", m.content}};
    if (content_lists && m.parts) {
      json parts = json::array();
      for (const std::string& p : *m.parts) parts.push_back({{"type", "text"}, {"text", p}});
      message["content"] = std::move(parts);
    }
    if (!m.name.empty()) message["name"] = m.name;
    messages.push_back(std::move(message));
  }
  return messages;
}

}  // namespace loraserve::server
