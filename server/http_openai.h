// OpenAiService: the OpenAI-compatible routes of the HTTP listener. `model` names a task ID (an
// adapter) or the base model (--served-model-name, by default the model folder's name):
//   POST /v1/completions       prompt: a string, token ids, or a list of either (one choice each)
//   POST /v1/chat/completions  messages rendered with the model's chat template (a model
//                              without one answers 400)
//   GET  /v1/models            the base model and every adapter registered now
// Every generation goes through a GenerationCall per choice, so HTTP and gRPC requests share the
// engine, its batches and its decisions. A non-streaming request waits for its result on its
// HTTP thread; a streaming one answers with Server-Sent Events (`data: {json}` chunks, then
// `data: [DONE]`), written by its HTTP thread as the engine thread hands over tokens (merged
// when the client reads slower than the engine generates), and a client that goes away cancels
// its sequences. Errors are OpenAI's JSON error objects with the HTTP status of the gRPC code.
// Thread-safe; `state` must outlive it, and it must outlive the HttpServer it adds routes to.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "server/http_openai_request.h"
#include "server/http_server.h"
#include "server/serving_state.h"

namespace loraserve::chat {
class ChatTemplate;
}

namespace loraserve::server {

struct OpenAiOptions {
  std::string served_model_name;  // the base model's `model` name
  std::string version;            // loraserve's, in system_fingerprint
};

class OpenAiService {
 public:
  OpenAiService(ServingState* state, OpenAiOptions options);
  ~OpenAiService();

  // Adds the /v1/* routes, and vLLM's /tokenize and /detokenize. REQUIRES: before http.start().
  void add_routes(HttpServer& http);
  // Adds only GET /v1/models and /v1/models/{model} (the HTTP admin listener serves them too, for
  // the tools that load adapters there). REQUIRES: before http.start().
  void add_model_routes(HttpServer& http);
  // The model's chat template (ChatTemplate::load's result: NOT_FOUND when it has none; chat is
  // then a 400 saying so, as it is, with the error, for a template that does not load).
  // REQUIRES: before the engine is published (no request reads it before).
  void set_chat_template(Result<std::unique_ptr<chat::ChatTemplate>> loaded);

  // The /v1/models answer (exposed for tests).
  nlohmann::json models() const;

 private:
  void generate(const httplib::Request& req, httplib::Response& res, bool chat);
  // vLLM's POST /tokenize and /detokenize, with the base model's tokenizer (every task's).
  void tokenize(const httplib::Request& req, httplib::Response& res);
  void detokenize(const httplib::Request& req, httplib::Response& res);
  // The engine's tokenizer for a /tokenize or /detokenize request naming `model`, or the error
  // to answer: UNAVAILABLE while loading, NOT_FOUND for a name that is neither the base model
  // nor a task ID, FAILED_PRECONDITION for a model without a tokenizer.
  Result<const tokenizer::Tokenizer*> tokenizer_for(const std::string& model) const;
  // NOT_FOUND for `model` (an excerpt of it): neither the base model nor a task ID, or neither
  // the base model nor a loaded adapter.
  Status not_a_model_error(const std::string& model) const;
  Status not_loaded_error(const std::string& model) const;
  // The prompt text of a chat request: its messages rendered with the chat template.
  Result<std::string> render_chat(const OpenAiRequest& request) const;

  ServingState* state_;
  ConnectionWatcher* watcher_ = nullptr;  // the HttpServer's, set by add_routes
  OpenAiOptions options_;
  std::unique_ptr<chat::ChatTemplate> chat_template_;
  Status chat_error_ = failed_precondition_error("the chat template is not loaded yet");
  const std::chrono::system_clock::time_point started_ = std::chrono::system_clock::now();
};

}  // namespace loraserve::server
