// Fuzzes the OpenAI-compatible HTTP API's request bodies: the first byte picks
// /v1/completions or /v1/chat/completions, the rest is the body (also read as vLLM's /tokenize
// and /detokenize bodies). Every refusal is a short, clean message naming a short field; every
// accepted body keeps the limits the parser promises, and a chat body's messages render with a
// Llama-3-style template (bounded by the render limits).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "chat/chat_template.h"
#include "fuzz/fuzz_util.h"
#include "server/http_openai_request.h"

using namespace loraserve;

namespace {

const chat::ChatTemplate& chat_template() {
  static const std::unique_ptr<chat::ChatTemplate> t = [] {
    chat::SpecialTokens tokens;
    tokens.bos_token = "<|begin_of_text|>";
    tokens.eos_token = "<|eot_id|>";
    chat::RenderLimits limits;
    limits.max_steps = 200'000;
    limits.max_string_bytes = 1u << 20;
    auto parsed = chat::ChatTemplate::parse(
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "{% if m.name %} ({{ m.name }}){% endif %}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}{% if enable_thinking is defined and enable_thinking %}<think>{% endif %}",
        tokens, limits);
    if (!parsed.ok()) fuzz::fail("the fixed template does not parse", parsed.status().to_string());
    return std::move(parsed).value();
  }();
  return *t;
}

void check_error(const server::RequestError& error) {
  fuzz::check_status(error.status);
  if (error.param.size() > 128) fuzz::fail("an error names a field longer than 128 bytes");
}

// The same body as vLLM's /tokenize and /detokenize read it.
void check_tokenization_bodies(std::string_view body) {
  auto tokenize = server::parse_tokenize_request(body);
  if (auto* error = std::get_if<server::RequestError>(&tokenize)) {
    check_error(*error);
  } else {
    const auto& r = std::get<server::TokenizeRequest>(tokenize).request;
    if (!r.chat && (r.prompts.size() != 1 || !std::holds_alternative<std::string>(r.prompts[0])))
      fuzz::fail("/tokenize accepted a prompt that is not one string");
  }
  auto detokenize = server::parse_detokenize_request(body);
  if (auto* error = std::get_if<server::RequestError>(&detokenize)) {
    check_error(*error);
  } else {
    for (int32_t id : std::get<server::DetokenizeRequest>(detokenize).tokens)
      if (id < 0) fuzz::fail("/detokenize accepted a negative token id");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = (data[0] & 1) != 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  check_tokenization_bodies(body);
  auto parsed = server::parse_openai_request(body, chat);
  if (auto* error = std::get_if<server::RequestError>(&parsed)) {
    check_error(*error);
    return 0;
  }
  const auto& r = std::get<server::OpenAiRequest>(parsed);
  if (r.chat != chat) fuzz::fail("the request kind changed");
  if (chat) {
    if (!r.prompts.empty()) fuzz::fail("a chat request carries completion prompts");
    const chat::ChatTemplate& t = chat_template();
    auto rendered = t.render(server::chat_template_messages(r, t.takes_content_lists()),
                             r.add_generation_prompt, r.chat_template_kwargs);
    if (!rendered.ok()) fuzz::check_status(rendered.status());
  } else {
    if (r.prompts.empty() || r.prompts.size() > server::kMaxPromptsPerRequest) {
      fuzz::fail("a completions request with no prompt or too many was accepted");
    }
  }
  if (r.logprobs && (r.top_logprobs < 0 || r.top_logprobs > engine::kMaxLogprobs)) {
    fuzz::fail("logprobs out of [0, 20] accepted", std::to_string(r.top_logprobs));
  }
  return 0;
}
