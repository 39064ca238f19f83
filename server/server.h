// Server: one `loraserve serve` process. It listens first, on the public address (Inference,
// Health, reflection), the admin address (Admin, Health, reflection), the HTTP address
// (OpenAI-compatible routes, /health) and, when set, the HTTP admin address (vLLM's adapter
// routes, /v1/models, /health), answering NOT_SERVING, UNAVAILABLE and 503 while load()
// reads the model and preloads adapters; then one engine thread runs every step, for gRPC and
// HTTP requests alike, and health turns SERVING. shutdown() drains: health NOT_SERVING (HTTP
// 503), new calls UNAVAILABLE, calls in flight on either transport finish (those left at the
// drain timeout are cancelled), then the HTTP and gRPC servers, the engine thread and the engine
// stop, in that order.
// listen(), load() and shutdown() are called from one thread; the services are thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "engine/engine.h"
#include "kernels/backend.h"
#include "server/adapter_loader.h"
#include "server/admin_service.h"
#include "server/health_service.h"
#include "server/http_openai.h"
#include "server/http_server.h"
#include "server/inference_service.h"
#include "server/server_metrics.h"
#include "server/serving_state.h"

namespace loraserve::server {

struct ServeOptions {
  std::string model_dir;
  kernels::BackendOptions backend;
  engine::EngineOptions engine;
  // The transport's limits (the request's own are in engine.request_limits).
  int32_t max_request_bytes = 4 << 20;    // one request message (gRPC's own default)
  int32_t max_concurrent_streams = 1024;  // inference calls open at once, all connections
  // Request bytes parsed, rendered and tokenized at once (ServingState::preparing).
  int64_t max_preparing_bytes = ServingState::kDefaultPreparingBytes;
  std::string listen = "127.0.0.1:50051";
  std::string admin_listen = "127.0.0.1:50052";
  std::string admin_token;   // empty: Admin needs no token (allowed on loopback only)
  std::string adapter_root;  // empty: Admin is off
  // A request for an unregistered task loads <adapter_root>/<task> (needs adapter_root).
  bool load_on_demand = false;
  MetricsOptions metrics;
  std::vector<std::pair<std::string, std::string>> preload;  // (task, folder)
  double drain_timeout_s = 30.0;
  int32_t admin_load_threads = 4;  // --admin-load-threads
  std::string version;
  HttpOptions http;               // http.listen "" turns HTTP off
  std::string served_model_name;  // empty: the model folder's name
  // The HTTP admin listener (http_adapter_admin.h: vLLM's adapter routes, /v1/models and /health;
  // admin_token, when set, as its key): "" is off. Off loopback it needs admin_token.
  std::string http_admin_listen;
};

// The name the base model answers to over HTTP: --served-model-name, else the model folder's
// name.
std::string served_model_name(const ServeOptions& options);

// True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost, unix sockets.
bool is_loopback_address(const std::string& address);

// Checks the options that need no file system: the admin token rule, the drain timeout, the
// request and transport limits, on-demand loading without an adapter root.
Status validate_serve_options(const ServeOptions& options);

class Server {
 public:
  // Validates the options and starts listening (not serving yet).
  static Result<std::unique_ptr<Server>> listen(const ServeOptions& options);
  ~Server();

  // Loads the model, preloads the adapters and starts serving.
  Status load();
  // Drains and stops; idempotent.
  void shutdown();

  // The addresses actually bound (the port chosen when the flag said port 0).
  const std::string& address() const { return address_; }
  const std::string& admin_address() const { return admin_address_; }
  // "" when HTTP is off.
  const std::string& http_address() const { return http_address_; }
  // "" when the HTTP admin listener is off.
  const std::string& http_admin_address() const { return http_admin_address_; }

 private:
  explicit Server(ServeOptions options);

  ServeOptions options_;
  ServingState state_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::optional<AdapterRoot> adapter_root_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<AdapterLoader> loader_;
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<HealthService> admin_health_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> admin_server_;
  std::unique_ptr<OpenAiService> openai_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<HttpServer> http_admin_;
  std::jthread engine_thread_;
  std::string address_;
  std::string admin_address_;
  std::string http_address_;
  std::string http_admin_address_;
  bool stopped_ = false;
};

}  // namespace loraserve::server
