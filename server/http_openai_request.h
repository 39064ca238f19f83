// The edge between OpenAI's JSON requests and the server: a /v1/completions or
// /v1/chat/completions body parsed and checked field by field into plain structs. Fields OpenAI
// defines that loraserve cannot honour and that would change the answer (n > 1, best_of, echo,
// suffix, tools, logit_bias, penalties, ...) are refused naming the field; unknown fields are
// ignored, as OpenAI's servers do; null is the same as absent. The body's size and nesting are
// capped before it is parsed (parse_untrusted_json). Value ranges that the engine
// checks (temperature, top_p, max_tokens against the context...) are left to it, so both
// transports give the same answer. Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"
#include "engine/request.h"

namespace loraserve::server {

// OpenAI's default max_tokens for /v1/completions; chat has none (the engine's default, capped
// by the context, applies).
inline constexpr int32_t kCompletionsDefaultMaxTokens = 16;
// Most choices (prompts times n) one request may ask for: each is a sequence.
inline constexpr size_t kMaxPromptsPerRequest = 128;

// One chat message as the template sees it: content parts joined into one string.
struct ChatMessage {
  std::string role;
  std::string content;  // a list of text parts: joined by newlines, as vLLM joins them
  std::optional<std::vector<std::string>> parts;  // the text parts, when content was a list
  std::string name;                               // "" when absent
};

struct OpenAiRequest {
  bool chat = false;
  std::string model;  // "" when absent: the base model
  // Completions: the prompts, text or token ids; each has `n` choices.
  std::vector<std::variant<std::string, std::vector<int32_t>>> prompts;
  // Choices per prompt. With a seed, choice j of a prompt samples with seed + j (vLLM's rule),
  // so that they differ.
  int32_t n = 1;
  // Chat: the conversation, rendered with the model's chat template.
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;  // chat (vLLM's extension)
  // Chat: further template variables (vLLM's extension, e.g. {"enable_thinking": false}); null
  // when absent.
  nlohmann::ordered_json chat_template_kwargs;
  // For text prompts: add BOS and the like (completions: true; chat: false, since the template
  // writes them).
  bool add_special_tokens = true;
  engine::SamplingParams params;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // Completions: `logprobs` N (the sampled token's logprob and N alternatives). Chat:
  // `logprobs: true` with `top_logprobs` N. Absent: no logprobs.
  bool logprobs = false;
  int32_t top_logprobs = 0;
  bool return_token_ids = false;  // vLLM's extension: token ids beside the text
};

// A request that cannot be served, and the field at fault ("" when it is the body itself).
struct RequestError {
  Status status;
  std::string param;
};

// Parses the body of POST /v1/completions (`chat` false) or /v1/chat/completions (`chat` true).
// Errors are INVALID_ARGUMENT naming the field (malformed JSON too, echoing no more than a
// short prefix of the input).
std::variant<OpenAiRequest, RequestError> parse_openai_request(std::string_view body, bool chat);

// vLLM's POST /tokenize: a completion's `prompt` (one string; `add_special_tokens` default true)
// or a chat's `messages` (rendered with the chat template; `add_generation_prompt` default true,
// `add_special_tokens` false, `chat_template_kwargs`), as /v1/completions and
// /v1/chat/completions read them; `return_token_strs` adds each token's string.
struct TokenizeRequest {
  OpenAiRequest request;  // chat when the body has "messages"
  bool return_token_strs = false;
};
std::variant<TokenizeRequest, RequestError> parse_tokenize_request(std::string_view body);

// vLLM's POST /detokenize: `tokens`, a list of token ids (special tokens are decoded too).
struct DetokenizeRequest {
  std::string model;  // "" when absent
  std::vector<int32_t> tokens;
};
std::variant<DetokenizeRequest, RequestError> parse_detokenize_request(std::string_view body);

// A chat request's messages as the chat template sees them: [{"role", "content"[, "name"]}...];
// content sent as a list of text parts is that list ([{"type": "text", "text"}...]) for a
// template that takes lists (ChatTemplate::takes_content_lists), else the joined text.
nlohmann::ordered_json chat_template_messages(const OpenAiRequest& request, bool content_lists);

}  // namespace loraserve::server
