#include "server/http_openai.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>

#include "adapters/registry.h"
#include "chat/chat_template.h"
#include "common/excerpt.h"
#include "server/generation_call.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace loraserve::server {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// How often a streaming request's thread wakes while no token arrives, so that the library
// checks whether the client is still there.
constexpr auto kStreamPoll = std::chrono::milliseconds(200);

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// "<prefix>-" and 24 random hex digits.
std::string random_id(std::string_view prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}-{:016x}{:08x}", prefix, rng(), static_cast<uint32_t>(rng()));
}

int64_t unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// A request id from the X-Request-Id header: printable ASCII, at most 128 characters; "" when
// the header is absent or unfit (then the response id names the request).
std::string header_request_id(const httplib::Request& req) {
  const std::string id = req.get_header_value("X-Request-Id");
  if (id.empty() || id.size() > 128) return "";
  for (char c : id)
    if (c < 0x21 || c > 0x7e) return "";
  return id;
}

// One token as a logprobs entry shows it: OpenAI's `token` and `bytes`.
struct ShownToken {
  std::string text;
  json bytes;       // null for a model without a tokenizer
  std::string raw;  // the bytes; the text without a tokenizer
};

// The bytes a token stands for (Tokenizer::token_bytes) and its text: those bytes when they are
// UTF-8, else "bytes:" and the bytes with each one outside well-formed UTF-8 written \xAB (a
// piece of a multi-byte character, as OpenAI writes one); "token_id:N" without a tokenizer.
ShownToken shown_token(const tokenizer::Tokenizer* tok, int32_t id) {
  auto raw = tok != nullptr ? tok->token_bytes(id) : Result<std::string>(std::string());
  if (tok == nullptr || !raw.ok()) {
    std::string text = fmt::format("token_id:{}", id);
    return {text, nullptr, text};
  }
  const std::string& bytes = *raw;
  json list = json::array();
  for (unsigned char c : bytes) list.push_back(static_cast<int>(c));
  if (!tokenizer::find_invalid_utf8(bytes)) return {bytes, std::move(list), bytes};
  std::string text = "bytes:";
  size_t i = 0;
  while (i < bytes.size()) {
    const size_t n = tokenizer::utf8_length(static_cast<unsigned char>(bytes[i]));
    const std::string_view ch = std::string_view(bytes).substr(i, n);
    if (ch.size() == n && !tokenizer::find_invalid_utf8(ch)) {
      text.append(ch);
      i += n;
    } else {
      text += fmt::format("\\x{:02x}", static_cast<unsigned char>(bytes[i]));
      ++i;
    }
  }
  return {std::move(text), std::move(list), bytes};
}

const char* finish_reason_text(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kLength:
      return "length";
    case engine::FinishReason::kEos:
    case engine::FinishReason::kStop:
      return "stop";
    default:
      return nullptr;
  }
}

// The error a sequence ended with instead of an answer; OK when it finished normally.
Status sequence_error(const SequenceSummary& s) {
  switch (s.finish_reason) {
    case engine::FinishReason::kError:
      return s.error;
    case engine::FinishReason::kDeadline:
      return deadline_exceeded_error("the deadline passed after {} generated tokens",
                                     s.completion_tokens);
    case engine::FinishReason::kCancelled:
      return unavailable_error(
          "the server is shutting down: the request was cancelled after {} generated tokens; "
          "retry on another replica",
          s.completion_tokens);
    default:
      return ok_status();
  }
}

// OpenAI's `param` and `code` for a request the engine's checks refused: their messages begin
// with the field's name ("max_tokens must be...", "prompt has 208 tokens; the model's context
// holds 128"); a prompt, or prompt and max_tokens, past the context is context_length_exceeded.
std::pair<std::string, std::string> error_param(const Status& st, bool chat) {
  if (st.code() != StatusCode::kInvalidArgument) return {};
  const std::string& m = st.message();
  size_t n = 0;
  while (n < m.size() && ((m[n] >= 'a' && m[n] <= 'z') || m[n] == '_')) ++n;
  std::string param = m.substr(0, n);
  const std::string code = m.find("context holds") != std::string::npos ||
                                   m.find("runs past the context") != std::string::npos
                               ? "context_length_exceeded"
                               : "";
  static const std::set<std::string> kFields = {"prompt",
                                                "max_tokens",
                                                "temperature",
                                                "top_p",
                                                "top_k",
                                                "stop",
                                                "stop_token_ids",
                                                "logprobs",
                                                "min_p",
                                                "repetition_penalty",
                                                "frequency_penalty",
                                                "presence_penalty",
                                                "min_tokens",
                                                "logit_bias",
                                                "allowed_token_ids"};
  if (!kFields.contains(param)) return {"", code};
  if (chat && param == "prompt") param = "messages";        // the prompt is the rendered chat
  if (chat && param == "logprobs") param = "top_logprobs";  // chat's count of alternatives
  return {param, code};
}

// What the engine sent one choice and the request's thread has not taken yet.
struct ChoiceDelta {
  size_t index = 0;
  std::vector<engine::GeneratedToken> tokens;
  int32_t answer_tokens = 0;  // SequenceUpdate::answer_tokens, the latest
  std::string text;
  std::optional<SequenceSummary> final;  // set once, with the last delta
};

// The sequences of one HTTP request (one per choice). The engine thread appends each step's
// tokens to its choice's slot; the request's thread takes them. Thread-safe; the engine's
// callbacks hold it alive (shared) until its sequences end.
class ChoiceRun {
 public:
  ChoiceRun(ServingState* state, size_t choices) : slots_(choices) {
    for (auto& s : slots_) s.call = std::make_unique<GenerationCall>(state);
  }

  GenerationCall& call(size_t i) { return *slots_[i].call; }
  size_t size() const { return slots_.size(); }

  // Admits every choice's call: UNAVAILABLE while the model loads or the server drains.
  Status admit() {
    for (auto& s : slots_) LS_RETURN_IF_ERROR(s.call->admit());
    return ok_status();
  }

  // Submits choice i: tokenizes its prompt on this thread, then resolves its task's adapter,
  // which may wait for room to load it. The future is set once the choice is in the engine, or
  // refused. REQUIRES: `self` owns this run.
  std::future<Status> submit(const std::shared_ptr<ChoiceRun>& self, size_t i,
                             GenerationInput input) {
    auto outcome = std::make_shared<std::promise<Status>>();
    std::future<Status> result = outcome->get_future();
    slots_[i].call->submit(
        std::move(input), [self, i](const engine::SequenceUpdate& u) { self->on_update(i, u); },
        [self, outcome](Status st) {
          if (st.ok()) {
            std::lock_guard<std::mutex> lock(self->mu_);
            ++self->unfinished_;
          }
          outcome->set_value(std::move(st));
        });
    return result;
  }

  // Waits up to `wait` for news, then moves every choice's news into `out`. True when every
  // submitted choice has finished and its final delta has been taken.
  bool take(std::vector<ChoiceDelta>* out, std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [&] { return news_; });
    news_ = false;
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (s.tokens.empty() && s.text.empty() && !(s.final && !s.final_taken)) continue;
      ChoiceDelta d;
      d.index = i;
      d.tokens = std::move(s.tokens);
      d.answer_tokens = s.answer_tokens;
      d.text = std::move(s.text);
      s.tokens.clear();
      s.text.clear();
      if (s.final && !s.final_taken) {
        d.final = s.final;
        s.final_taken = true;
        --untaken_finals_;
      }
      out->push_back(std::move(d));
    }
    return unfinished_ == 0 && untaken_finals_ == 0;
  }

  void cancel() {
    for (auto& s : slots_) s.call->cancel();
  }
  void wait_finished() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return unfinished_ == 0; });
  }
  // Logs every submitted choice. REQUIRES: wait_finished().
  void log_finished() {
    for (auto& s : slots_)
      if (s.final) s.call->log_finished(*s.final);
  }

 private:
  struct Slot {
    std::unique_ptr<GenerationCall> call;
    std::vector<engine::GeneratedToken> tokens;
    int32_t answer_tokens = 0;
    std::string text;
    std::optional<SequenceSummary> final;
    bool final_taken = false;
  };

  // Engine thread.
  void on_update(size_t i, const engine::SequenceUpdate& u) {
    std::optional<SequenceSummary> summary;
    if (u.finished) summary = slots_[i].call->finish(u);
    {
      std::lock_guard<std::mutex> lock(mu_);
      Slot& s = slots_[i];
      s.tokens.insert(s.tokens.end(), u.new_tokens.begin(), u.new_tokens.end());
      s.answer_tokens = u.answer_tokens;
      s.text += u.new_text;
      if (summary) {
        s.final = std::move(summary);
        --unfinished_;
        ++untaken_finals_;
      }
      news_ = true;
    }
    cv_.notify_one();  // the request's thread is the only one that waits
  }

  std::vector<Slot> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool news_ = false;
  int unfinished_ = 0;
  int untaken_finals_ = 0;
};

// Writes OpenAI's JSON for one request: the whole answer, or its stream chunks. Keeps each
// choice's text offset (completions logprobs) across chunks. Used by one thread.
class Shaper {
 public:
  Shaper(const OpenAiRequest& request, std::string id, std::string model, std::string fingerprint,
         const tokenizer::Tokenizer* tok, size_t choices)
      : chat_(request.chat),
        logprobs_(request.logprobs),
        return_token_ids_(request.return_token_ids),
        include_usage_(request.include_usage && request.stream),
        id_(std::move(id)),
        model_(std::move(model)),
        fingerprint_(std::move(fingerprint)),
        created_(unix_seconds(std::chrono::system_clock::now())),
        tok_(tok),
        per_prompt_(static_cast<size_t>(request.n)),
        text_offset_(choices, 0),
        pending_(choices),
        released_(choices, 0) {}

  // The tokens of `d` that the answer's text now covers (SequenceUpdate::answer_tokens), in
  // order: tokens whose text is held back (it may become a stop string) wait for it; at the end,
  // the EOS or stop token and tokens past a stop string are dropped.
  std::vector<engine::GeneratedToken> answer_tokens(const ChoiceDelta& d) {
    auto& pending = pending_[d.index];
    pending.insert(pending.end(), d.tokens.begin(), d.tokens.end());
    const auto n = static_cast<size_t>(std::clamp<int64_t>(
        int64_t{d.answer_tokens} - released_[d.index], 0, static_cast<int64_t>(pending.size())));
    std::vector<engine::GeneratedToken> out(pending.begin(), pending.begin() + n);
    pending.erase(pending.begin(), pending.begin() + n);
    released_[d.index] += static_cast<int64_t>(n);
    if (d.final) pending.clear();
    return out;
  }

  json logprobs(size_t index, const std::vector<engine::GeneratedToken>& tokens) {
    if (!logprobs_) return nullptr;
    if (chat_) {
      json content = json::array();
      for (const auto& t : tokens) {
        ShownToken shown = shown_token(tok_, t.token_id);
        json top = json::array();
        for (const auto& alt : t.top) {
          ShownToken alt_shown = shown_token(tok_, alt.token_id);
          top.push_back({{"token", std::move(alt_shown.text)},
                         {"logprob", alt.logprob},
                         {"bytes", std::move(alt_shown.bytes)}});
        }
        content.push_back({{"token", std::move(shown.text)},
                           {"logprob", t.logprob},
                           {"bytes", std::move(shown.bytes)},
                           {"top_logprobs", std::move(top)}});
      }
      return {{"content", std::move(content)}, {"refusal", nullptr}};
    }
    json out = {{"tokens", json::array()},
                {"token_logprobs", json::array()},
                {"top_logprobs", json::array()},
                {"text_offset", json::array()}};
    for (const auto& t : tokens) {
      const ShownToken shown = shown_token(tok_, t.token_id);
      const std::string& text = shown.text;
      json top = json::object();
      for (const auto& alt : t.top) {
        const std::string alt_text = shown_token(tok_, alt.token_id).text;
        if (!top.contains(alt_text)) top[alt_text] = alt.logprob;
      }
      if (!top.contains(text)) top[text] = t.logprob;
      out["tokens"].push_back(text);
      out["token_logprobs"].push_back(t.logprob);
      out["top_logprobs"].push_back(std::move(top));
      out["text_offset"].push_back(text_offset_[index]);
      // Characters begun in the token's bytes: a character split across tokens counts once.
      for (unsigned char c : shown.raw) text_offset_[index] += (c & 0xC0) != 0x80 ? 1 : 0;
    }
    return out;
  }

  static json token_ids(const std::vector<engine::GeneratedToken>& tokens) {
    json ids = json::array();
    for (const auto& t : tokens) ids.push_back(t.token_id);
    return ids;
  }

  json usage(int64_t prompt, int64_t completion) const {
    return {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion}};
  }

  json envelope(const char* object) const {
    return {{"id", id_},
            {"object", object},
            {"created", created_},
            {"model", model_},
            {"system_fingerprint", fingerprint_}};
  }

  // Usage counts a prompt's tokens once, with its first choice (as OpenAI and vLLM count them).
  bool counts_prompt(size_t index) const { return index % per_prompt_ == 0; }

  // The non-streaming answer. REQUIRES: every choice finished normally.
  json answer(const std::vector<ChoiceDelta>& choices) {
    json out = envelope(chat_ ? "chat.completion" : "text_completion");
    json list = json::array();
    int64_t prompt = 0, completion = 0;
    for (const ChoiceDelta& d : choices) {
      const std::vector<engine::GeneratedToken> tokens = answer_tokens(d);
      json c = {{"index", d.index},
                {"logprobs", logprobs(d.index, tokens)},
                {"finish_reason", finish_reason_text(d.final->finish_reason)}};
      if (chat_) {
        c["message"] = {{"role", "assistant"}, {"content", d.text}, {"refusal", nullptr}};
      } else {
        c["text"] = d.text;
      }
      if (return_token_ids_) c["token_ids"] = token_ids(d.tokens);  // every generated token
      list.push_back(std::move(c));
      if (counts_prompt(d.index)) prompt += d.final->prompt_tokens;
      completion += d.final->completion_tokens;
    }
    out["choices"] = std::move(list);
    out["usage"] = usage(prompt, completion);
    return out;
  }

  // The chat stream's first chunk of a choice: the assistant's role.
  std::string role_chunk(size_t index) const {
    json out = envelope("chat.completion.chunk");
    out["choices"] = json::array({{{"index", index},
                                   {"delta", {{"role", "assistant"}, {"content", ""}}},
                                   {"logprobs", nullptr},
                                   {"finish_reason", nullptr}}});
    if (include_usage_) out["usage"] = nullptr;
    return event(out);
  }

  // The chunk for one choice's news; "" when there is nothing to send yet (text held back and
  // neither logprobs nor token ids asked for).
  std::string chunk(const ChoiceDelta& d) {
    const char* finish = d.final ? finish_reason_text(d.final->finish_reason) : nullptr;
    const std::vector<engine::GeneratedToken> tokens = answer_tokens(d);
    const bool has_tokens =
        (logprobs_ && !tokens.empty()) || (return_token_ids_ && !d.tokens.empty());
    if (d.text.empty() && !has_tokens && finish == nullptr) return "";
    json c = {{"index", d.index}, {"logprobs", logprobs(d.index, tokens)}};
    if (chat_) {
      c["delta"] = d.text.empty() && finish != nullptr && !has_tokens ? json::object()
                                                                      : json{{"content", d.text}};
    } else {
      c["text"] = d.text;
    }
    c["finish_reason"] = finish != nullptr ? json(finish) : json(nullptr);
    if (return_token_ids_) c["token_ids"] = token_ids(d.tokens);
    json out = envelope(chat_ ? "chat.completion.chunk" : "text_completion");
    out["choices"] = json::array({std::move(c)});
    if (include_usage_) out["usage"] = nullptr;
    return event(out);
  }

  // The last chunk when stream_options.include_usage asks for it: usage, no choices.
  std::string usage_chunk(int64_t prompt, int64_t completion) const {
    if (!include_usage_) return "";
    json out = envelope(chat_ ? "chat.completion.chunk" : "text_completion");
    out["choices"] = json::array();
    out["usage"] = usage(prompt, completion);
    return event(out);
  }

  static std::string event(const json& j) { return "data: " + dump(j) + "\n\n"; }
  static std::string error_event(const Status& st) {
    return "data: " + openai_error_json(st) + "\n\n";
  }

 private:
  bool chat_;
  bool logprobs_;
  bool return_token_ids_;
  bool include_usage_;
  std::string id_;
  std::string model_;
  std::string fingerprint_;
  int64_t created_;
  const tokenizer::Tokenizer* tok_;
  size_t per_prompt_;  // choices per prompt (n)
  std::vector<size_t> text_offset_;
  std::vector<std::vector<engine::GeneratedToken>> pending_;  // per choice: not yet answer tokens
  std::vector<int64_t> released_;                             // per choice: answer tokens so far
};

void set_request_error(httplib::Response& res, const RequestError& e) {
  set_openai_error(res, e.status, e.param);
}

// OpenAI's answer for a model this server does not serve.
void set_model_not_found(httplib::Response& res, const Status& st) {
  set_openai_error(res, st, "model", "model_not_found");
}

// OpenAiService::tokenizer_for's error: an unknown model is OpenAI's model_not_found.
void set_tokenizer_error(httplib::Response& res, const Status& st) {
  if (st.code() == StatusCode::kNotFound) return set_model_not_found(res, st);
  set_openai_error(res, st);
}

}  // namespace

OpenAiService::OpenAiService(ServingState* state, OpenAiOptions options)
    : state_(state), options_(std::move(options)) {}

OpenAiService::~OpenAiService() = default;

void OpenAiService::set_chat_template(Result<std::unique_ptr<chat::ChatTemplate>> loaded) {
  if (loaded.ok()) {
    chat_template_ = std::move(loaded).value();
    spdlog::info("chat template loaded: /v1/chat/completions is on");
  } else if (loaded.status().code() == StatusCode::kNotFound) {
    chat_error_ = failed_precondition_error(
        "this model has no chat template (chat_template.jinja, or chat_template in "
        "tokenizer_config.json): use /v1/completions");
    spdlog::info("no chat template: /v1/chat/completions answers 400");
  } else {
    chat_error_ = loaded.status().with_context("the model's chat template");
    spdlog::warn("{}; /v1/chat/completions answers 400", chat_error_.to_string());
  }
}

Result<std::string> OpenAiService::render_chat(const OpenAiRequest& r) const {
  if (!chat_template_) return chat_error_;
  return chat_template_->render(chat_template_messages(r, chat_template_->takes_content_lists()),
                                r.add_generation_prompt, r.chat_template_kwargs);
}

void OpenAiService::add_routes(HttpServer& http) {
  watcher_ = &http.watcher();
  http.post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generate(req, res, /*chat=*/false);
  });
  http.post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generate(req, res, /*chat=*/true);
  });
  http.post("/tokenize",
            [this](const httplib::Request& req, httplib::Response& res) { tokenize(req, res); });
  http.post("/detokenize",
            [this](const httplib::Request& req, httplib::Response& res) { detokenize(req, res); });
  add_model_routes(http);
}

Status OpenAiService::not_a_model_error(const std::string& model) const {
  return not_found_error("model {} does not exist: it is neither the base model '{}' nor a task ID",
                         excerpt(model), options_.served_model_name);
}

Status OpenAiService::not_loaded_error(const std::string& model) const {
  return not_found_error(
      "model {} does not exist: it is neither the base model '{}' nor a loaded adapter (GET "
      "/v1/models lists them)",
      excerpt(model), options_.served_model_name);
}

Result<const tokenizer::Tokenizer*> OpenAiService::tokenizer_for(const std::string& model) const {
  const engine::Engine* e = state_->engine();
  if (e == nullptr) return unavailable_error("the model is still loading; retry shortly");
  if (!model.empty() && model != options_.served_model_name &&
      !adapters::AdapterRegistry::validate_task_id(model).ok()) {
    return not_a_model_error(model);
  }
  if (e->tokenizer() == nullptr) {
    return failed_precondition_error(
        "this model has no tokenizer.json: it takes and gives token ids only");
  }
  return e->tokenizer();
}

void OpenAiService::tokenize(const httplib::Request& req, httplib::Response& res) {
  // Rendering and tokenizing take many times the body's bytes, as for a generation.
  ByteBudget::Claim preparing = state_->preparing().claim(req.body.size());
  auto parsed = parse_tokenize_request(req.body);
  if (auto* e = std::get_if<RequestError>(&parsed)) return set_request_error(res, *e);
  const TokenizeRequest& t = std::get<TokenizeRequest>(parsed);
  const OpenAiRequest& r = t.request;
  auto tok = tokenizer_for(r.model);
  if (!tok.ok()) return set_tokenizer_error(res, tok.status());
  Result<std::string> text = r.chat ? render_chat(r) : std::get<std::string>(r.prompts[0]);
  if (!text.ok()) return set_openai_error(res, text.status());
  auto ids = (*tok)->encode(*text, r.add_special_tokens);
  if (!ids.ok()) return set_openai_error(res, ids.status(), r.chat ? "messages" : "prompt");
  json answer = {{"count", ids->size()},
                 {"max_model_len", state_->engine()->config().max_context},
                 {"tokens", *ids}};
  if (t.return_token_strs) {
    json strs = json::array();
    for (int32_t id : *ids) strs.push_back(std::string((*tok)->id_to_token(id).value_or("")));
    answer["token_strs"] = std::move(strs);
  }
  res.set_content(dump(answer), "application/json");
}

void OpenAiService::detokenize(const httplib::Request& req, httplib::Response& res) {
  ByteBudget::Claim preparing = state_->preparing().claim(req.body.size());
  auto parsed = parse_detokenize_request(req.body);
  if (auto* e = std::get_if<RequestError>(&parsed)) return set_request_error(res, *e);
  const DetokenizeRequest& d = std::get<DetokenizeRequest>(parsed);
  auto tok = tokenizer_for(d.model);
  if (!tok.ok()) return set_tokenizer_error(res, tok.status());
  // At most a context of tokens (vLLM's bound too), so the text stays a few times the body.
  const int64_t context = state_->engine()->config().max_context;
  if (static_cast<int64_t>(d.tokens.size()) > context) {
    return set_openai_error(res,
                            invalid_argument_error("'tokens' has {} ids; at most {}, the model's "
                                                   "context",
                                                   d.tokens.size(), context),
                            "tokens");
  }
  // An id past the model's vocabulary is an error; one inside it without a token decodes to
  // nothing, as Hugging Face's decode skips it.
  const int64_t vocab = state_->engine()->config().vocab_size;
  for (size_t i = 0; i < d.tokens.size(); ++i) {
    if (d.tokens[i] >= vocab) {
      return set_openai_error(res,
                              invalid_argument_error("'tokens[{}]' {} is past the vocabulary ({} "
                                                     "tokens)",
                                                     i, d.tokens[i], vocab),
                              "tokens");
    }
  }
  // As vLLM decodes: special tokens included.
  auto text = (*tok)->decode(d.tokens, /*skip_special_tokens=*/false);
  if (!text.ok()) return set_openai_error(res, text.status(), "tokens");
  res.set_content(dump(json{{"prompt", *text}}), "application/json");
}

void OpenAiService::add_model_routes(HttpServer& http) {
  http.get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    if (state_->engine() == nullptr) {
      set_openai_error(res, unavailable_error("the model is still loading; retry shortly"));
      return;
    }
    res.set_content(dump(models()), "application/json");
  });
  // OpenAI's "retrieve model": one entry of the list.
  http.get_under("/v1/models/", [this](const httplib::Request& req, httplib::Response& res) {
    if (state_->engine() == nullptr) {
      set_openai_error(res, unavailable_error("the model is still loading; retry shortly"));
      return;
    }
    const std::string id = req.matches[1];
    const json list = models();
    for (const json& m : list["data"]) {
      if (m["id"] == id) return res.set_content(dump(m), "application/json");
    }
    set_model_not_found(res, not_loaded_error(id));
  });
}

json OpenAiService::models() const {
  json data = json::array();
  const engine::Engine* e = state_->engine();
  if (e == nullptr) return {{"object", "list"}, {"data", data}};
  const int64_t context = e->config().max_context;
  data.push_back({{"id", options_.served_model_name},
                  {"object", "model"},
                  {"created", unix_seconds(started_)},
                  {"owned_by", "loraserve"},
                  {"root", options_.served_model_name},
                  {"parent", nullptr},
                  {"max_model_len", context}});
  for (const adapters::AdapterRef& a : e->adapters().list()) {
    data.push_back({{"id", a->task_id},
                    {"object", "model"},
                    {"created", unix_seconds(a->loaded_at)},
                    {"owned_by", "loraserve"},
                    {"root", a->task_id},
                    {"parent", options_.served_model_name},
                    {"max_model_len", context}});
  }
  return {{"object", "list"}, {"data", std::move(data)}};
}

void OpenAiService::generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const std::string id = random_id(chat ? "chatcmpl" : "cmpl");
  const std::string header_id = header_request_id(req);
  const std::string request_id = header_id.empty() ? id : header_id;
  res.set_header("X-Request-Id", request_id);

  // Parsing, rendering and tokenizing take many times the body's bytes: they wait for room in
  // the preparing budget, which the request leaves once its choices are submitted.
  ByteBudget::Claim preparing = state_->preparing().claim(req.body.size());
  auto parsed = parse_openai_request(req.body, chat);
  if (auto* e = std::get_if<RequestError>(&parsed)) {
    GenerationCall refused(state_);
    refused.identify(request_id, "");
    refused.log_rejected(e->status);
    return set_request_error(res, *e);
  }
  OpenAiRequest& r = std::get<OpenAiRequest>(parsed);
  // The base model answers to its served name (or to no name); anything else is a task ID.
  const bool base = r.model.empty() || r.model == options_.served_model_name;
  const std::string task = base ? "" : r.model;
  const std::string model = base ? options_.served_model_name : r.model;

  // Choice i answers prompt i / per_prompt (the n choices of a prompt are consecutive, as
  // OpenAI numbers them).
  const size_t per_prompt = static_cast<size_t>(r.n);
  const size_t n = (chat ? 1 : r.prompts.size()) * per_prompt;
  auto run = std::make_shared<ChoiceRun>(state_, n);
  // A name that cannot be a task ID is named in the log only as an excerpt.
  const bool valid_task = base || adapters::AdapterRegistry::validate_task_id(task).ok();
  for (size_t i = 0; i < n; ++i)
    run->call(i).identify(n == 1 ? request_id : fmt::format("{}-{}", request_id, i),
                          valid_task ? task : excerpt(task));
  // One call per prompt: a list of more prompts than calls may be open can never be served.
  if (n > state_->max_calls()) {
    const Status too_many = invalid_argument_error(
        "{}: {} choices in one request; at most {} calls are served at once "
        "(--max-concurrent-streams)",
        per_prompt > 1 ? "n" : "prompt", n, state_->max_calls());
    run->call(0).log_rejected(too_many);
    return set_openai_error(res, too_many, per_prompt > 1 ? "n" : "prompt");
  }
  Status st = run->admit();
  if (!st.ok()) {
    run->call(0).log_rejected(st);
    return set_openai_error(res, st);
  }
  if (!valid_task) {
    st = not_a_model_error(task);
    run->call(0).log_rejected(st);
    return set_model_not_found(res, st);
  }
  engine::Engine* engine = state_->engine();
  if (chat) {
    auto prompt = render_chat(r);
    if (!prompt.ok()) {
      run->call(0).log_rejected(prompt.status());
      return set_openai_error(res, prompt.status());
    }
    r.prompts.emplace_back(std::move(prompt).value());
  }

  // A client that closes its connection cancels its choices, while they wait for room to load
  // their adapter or generate an answer sent whole (a stream notices at its next write, after
  // this handler has returned).
  const ConnectionWatcher::Watch watch = watcher_->watch(req, [run] { run->cancel(); });

  // Submit every choice; a refusal cancels those already running and is the request's answer.
  // The prompts are tokenized as they are submitted; the budget is left before waiting for
  // their adapter, which may take until the request's deadline.
  std::vector<std::future<Status>> submitted;
  for (size_t i = 0; i < n; ++i) {
    GenerationInput input;
    input.request_id = run->call(i).request_id();
    input.task_id = task;
    input.prompt = r.prompts[i / per_prompt];
    input.add_special_tokens = r.add_special_tokens;
    input.params = r.params;
    // vLLM's rule: the n choices of a seeded request sample with seed, seed + 1, ...
    if (r.params.seed) input.params.seed = *r.params.seed + i % per_prompt;
    submitted.push_back(run->submit(run, i, std::move(input)));
  }
  preparing.release();
  std::optional<size_t> refused;  // the first choice refused
  for (size_t i = 0; i < n; ++i) {
    Status outcome = submitted[i].get();
    if (outcome.ok()) continue;
    run->call(i).log_rejected(outcome);
    if (!refused) {
      refused = i;
      st = std::move(outcome);
    }
  }
  if (refused) {
    const size_t i = *refused;
    run->cancel();
    run->wait_finished();
    run->log_finished();
    if (st.code() == StatusCode::kNotFound) {
      return set_model_not_found(res, not_loaded_error(task));
    }
    const auto [param, code] = error_param(st, chat);
    const bool several_prompts = !chat && r.prompts.size() > 1;
    return set_openai_error(
        res, several_prompts ? st.with_context(fmt::format("prompt[{}]", i / per_prompt)) : st,
        param, code);
  }

  auto shaper = std::make_shared<Shaper>(r, id, model, "loraserve-" + options_.version,
                                         engine->tokenizer(), n);
  if (!r.stream) {
    run->wait_finished();
    std::vector<ChoiceDelta> deltas;
    run->take(&deltas, std::chrono::milliseconds(0));
    run->log_finished();
    for (const ChoiceDelta& d : deltas) {
      st = sequence_error(*d.final);
      if (!st.ok()) return set_openai_error(res, st);
    }
    res.set_content(dump(shaper->answer(deltas)), "application/json");
    return;
  }

  // Streaming. The provider runs on this request's HTTP thread after the headers are written;
  // cpp-httplib checks that the client is still there before each call, and the releaser runs
  // when the response ends either way.
  struct StreamState {
    bool started = false;
    bool completed = false;
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
  };
  auto stream = std::make_shared<StreamState>();
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [run, shaper, stream, chat](size_t, httplib::DataSink& sink) {
        // Writes chunks as the engine hands tokens over; returns to the library (which checks
        // that the client is still there before calling again) after kStreamPoll without news.
        // While tokens flow, a client that went away shows as a failed write.
        std::string out;
        if (!stream->started) {
          stream->started = true;
          if (chat)
            for (size_t i = 0; i < run->size(); ++i) out += shaper->role_chunk(i);
        }
        for (;;) {
          std::vector<ChoiceDelta> deltas;
          const bool done =
              run->take(&deltas, out.empty() ? kStreamPoll : std::chrono::milliseconds(0));
          if (deltas.empty() && !done && out.empty()) return true;
          Status failed;
          for (const ChoiceDelta& d : deltas) {
            if (d.final) {
              const Status st = sequence_error(*d.final);
              if (!st.ok() && failed.ok()) failed = st;
              if (shaper->counts_prompt(d.index)) stream->prompt_tokens += d.final->prompt_tokens;
              stream->completion_tokens += d.final->completion_tokens;
            }
            if (failed.ok()) out += shaper->chunk(d);
          }
          if (!failed.ok()) {
            run->cancel();
            out += Shaper::error_event(failed) + "data: [DONE]\n\n";
          } else if (done) {
            out += shaper->usage_chunk(stream->prompt_tokens, stream->completion_tokens);
            out += "data: [DONE]\n\n";
          }
          if (!out.empty() && !sink.write(out.data(), out.size())) return false;
          out.clear();
          if (done || !failed.ok()) {
            stream->completed = true;
            sink.done();
            return true;
          }
        }
      },
      [run, stream](bool) {
        if (!stream->completed) run->cancel();  // the client went away
        run->wait_finished();
        run->log_finished();
      });
}

}  // namespace loraserve::server
