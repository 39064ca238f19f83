// A model's chat template, rendered the way Hugging Face transformers' apply_chat_template
// renders it (tokenize=False): Jinja2 in an ImmutableSandboxedEnvironment with trim_blocks and
// lstrip_blocks, the loopcontrols extension and the {% generation %} tag, transformers' tojson,
// raise_exception and strftime_now, and the tokenizer's special tokens as variables. The Jinja
// implementation is our own (chat/jinja_*.cpp: lexer, parser to a syntax tree, interpreter over
// Python-like values) and is checked byte for byte against python3-jinja2.
//
// What a render sees (as `render(messages=..., tools=None, documents=None,
// add_generation_prompt=..., **special_tokens_map, **extra_context)` in transformers):
//   messages               the conversation, passed through as given (content a string, null,
//                          or a list of {"type": "text", "text": ...} parts)
//   add_generation_prompt  whether to end with the header of an assistant turn
//   tools, documents       None unless extra_context sets them
//   bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token
//                          the ones the tokenizer sets (strings), additional_special_tokens
//                          (a list) when it has any
//   extra_context's keys   anything else the caller passes (e.g. enable_thinking), overriding
//                          the special tokens as transformers' kwargs do
//
// The template's output is the prompt text. Tokenize it WITHOUT adding special tokens (Hugging
// Face's apply_chat_template uses add_special_tokens=False): templates write the BOS themselves.
//
// JSON objects keep their key order (nlohmann::ordered_json) because templates print them
// (tojson, items()) and Python dicts are ordered; a plain nlohmann::json converts implicitly but
// arrives with sorted keys.
//
// A ChatTemplate is immutable after creation: render() is const and thread-safe. Nesting is
// bounded (templates deeper than 100 levels are refused, renders deeper than 500 evaluation
// levels or 64 calls stop), so a render needs under 200 KiB of stack (release build).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/render_limits.h"
#include "common/status.h"

namespace loraserve::chat {

namespace jinja {
struct TemplateAst;
}

// The special tokens Hugging Face passes to a chat template (its special_tokens_map): each one
// the tokenizer sets, as a string.
struct SpecialTokens {
  std::optional<std::string> bos_token, eos_token, unk_token, sep_token, pad_token, cls_token,
      mask_token;
  std::vector<std::string> additional_special_tokens;

  // From a parsed tokenizer_config.json (and special_tokens_map.json, which transformers reads
  // only when the config has no added_tokens_decoder; null when absent). Each token is a string
  // or an AddedToken object with "content". INVALID_ARGUMENT naming `config_name` and the field
  // for another shape.
  static Result<SpecialTokens> from_config(const nlohmann::ordered_json& config,
                                           const nlohmann::ordered_json& special_tokens_map,
                                           std::string_view config_name);
};

class ChatTemplate {
 public:
  // From a model folder, as transformers finds it: chat_template.jinja (which wins), else
  // tokenizer_config.json's "chat_template" (a string, or a list of {"name", "template"} of
  // which "default" is used), else chat_template.json's "chat_template" (a processor's file, as
  // vLLM also reads it). Special tokens from tokenizer_config.json (see SpecialTokens).
  // NOT_FOUND when the model has no template; INVALID_ARGUMENT naming the file (and the line)
  // for a bad template or config.
  static Result<std::unique_ptr<ChatTemplate>> load(const std::string& model_dir,
                                                    const RenderLimits& limits = {});
  // A template from its source. `origin` names it in errors. INVALID_ARGUMENT naming the line
  // for a syntax error.
  static Result<std::unique_ptr<ChatTemplate>> parse(std::string source, SpecialTokens tokens,
                                                     const RenderLimits& limits = {},
                                                     std::string origin = "chat template");

  ~ChatTemplate();
  ChatTemplate(const ChatTemplate&) = delete;
  ChatTemplate& operator=(const ChatTemplate&) = delete;

  // Renders `messages` (a JSON array; each message passed through as given) with
  // add_generation_prompt, the special tokens and `extra_context` (a JSON object of further
  // variables, or null). INVALID_ARGUMENT naming the template line for a template error,
  // raise_exception (its message), a render over the limits, or messages that are not an array
  // (or hold text that is not UTF-8, or nest deeper than 256 levels).
  Result<std::string> render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                             const nlohmann::ordered_json& extra_context = nullptr) const;

  // Whether the template reads a message's content as a list of parts (OpenAI's [{"type":
  // "text", "text": ...}]): it loops over it, filters it (selectattr, map, first, last) or
  // indexes it, directly or through a variable set from it. Such a template gets the parts as
  // sent; one that takes a string gets them joined (vLLM decides the same way: a template that
  // only checks `is string` drops a list). Decided once, from the source.
  bool takes_content_lists() const { return takes_content_lists_; }
  // The same, for any template source.
  static bool source_takes_content_lists(std::string_view source);

  const std::string& source() const { return source_; }
  const SpecialTokens& special_tokens() const { return tokens_; }

 private:
  ChatTemplate(std::string source, SpecialTokens tokens, const RenderLimits& limits,
               std::string origin, std::unique_ptr<jinja::TemplateAst> ast);

  std::string source_;
  SpecialTokens tokens_;
  RenderLimits limits_;
  std::string origin_;
  std::unique_ptr<jinja::TemplateAst> ast_;
  bool takes_content_lists_ = false;
};

}  // namespace loraserve::chat
