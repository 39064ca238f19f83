// Fuzzes the chat-template engine (a Jinja2 subset, as transformers runs it): the input is a
// template, which tokenizer_config.json carries and an operator may not have read. Parsing and
// rendering a fixed conversation must end within the render limits (no crash, no stack
// overflow, no unbounded time or memory), and every error is a short, clean message.
#include <cstddef>
#include <cstdint>
#include <string>

#include "chat/chat_template.h"
#include "fuzz/fuzz_util.h"

using namespace loraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  chat::SpecialTokens tokens;
  tokens.bos_token = "<s>";
  tokens.eos_token = "</s>";
  tokens.additional_special_tokens = {"<tool>", "</tool>"};
  chat::RenderLimits limits;
  // Small enough that one input takes milliseconds, large enough for every real template.
  limits.max_steps = 100'000;
  limits.max_string_bytes = 1u << 20;
  auto parsed = chat::ChatTemplate::parse(std::string(reinterpret_cast<const char*>(data), size),
                                          tokens, limits, "fuzzed template");
  if (!parsed.ok()) {
    fuzz::check_status(parsed.status());
    return 0;
  }
  static const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2? \u00e9\u4e2d"},
    {"role": "assistant", "content": "4", "tool_calls": [{"function": {"name": "add",
      "arguments": {"a": 2, "b": 2}}}]},
    {"role": "user", "content": [{"type": "text", "text": "And 3+3?"}]}
  ])");
  static const nlohmann::ordered_json kwargs = {{"enable_thinking", false}, {"tools", nullptr}};
  for (bool generation_prompt : {false, true}) {
    auto rendered = (*parsed)->render(messages, generation_prompt, kwargs);
    if (!rendered.ok()) {
      fuzz::check_status(rendered.status());
    } else if (rendered->size() > limits.max_string_bytes) {
      fuzz::fail("a render longer than max_string_bytes");
    }
  }
  return 0;
}
