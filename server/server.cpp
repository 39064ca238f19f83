#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "chat/chat_template.h"
#include "engine/loader.h"
#include "server/http_adapter_admin.h"

namespace loraserve::server {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kInferenceName = "loraserve.v1.Inference";
constexpr std::string_view kAdminName = "loraserve.v1.Admin";
// After a drain timeout, how long cancelled sequences get to end (they end within a step).
constexpr auto kCancelGrace = std::chrono::seconds(10);
// After the last call ends, how long new calls still get a clean UNAVAILABLE before the gRPC
// servers shut down: a client that sends its next request right after its last response is
// refused by the drain, not cut off by the transport going away.
constexpr auto kLinger = std::chrono::milliseconds(200);
// A drain timeout longer than this (a year) waits without a limit.
constexpr double kForeverSeconds = 365.0 * 24 * 3600;
// Connections the HTTP admin listener serves at once (a sidecar or an operator, not traffic).
constexpr int32_t kHttpAdminThreads = 8;

// "host:port" with the bound port in place of the requested one.
std::string bound_address(const std::string& requested, int port) {
  if (requested.starts_with("unix:") || requested.starts_with("unix-abstract:")) return requested;
  const size_t colon = requested.rfind(':');
  return requested.substr(0, colon) + ":" + std::to_string(port);
}

Result<std::unique_ptr<grpc::Server>> start_grpc(std::string_view flag, const std::string& address,
                                                 std::vector<grpc::Service*> services,
                                                 int32_t max_request_bytes, int* port) {
  grpc::ServerBuilder builder;
  // A larger request is refused by gRPC itself, with RESOURCE_EXHAUSTED, before it is read.
  builder.SetMaxReceiveMessageSize(max_request_bytes);
  // gRPC sets SO_REUSEPORT by default, which would let a second server share a busy port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
  for (grpc::Service* s : services) builder.RegisterService(s);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || *port == 0) {
    return unavailable_error(
        "{}: cannot listen on '{}' (address in use, or not an address of this machine)", flag,
        address);
  }
  return server;
}

}  // namespace

bool is_loopback_address(const std::string& address) {
  std::string a = address;
  if (a.starts_with("unix:") || a.starts_with("unix-abstract:")) return true;
  for (std::string_view scheme : {"ipv4:", "ipv6:", "dns:///", "dns:"}) {
    if (a.starts_with(scheme)) a = a.substr(scheme.size());
  }
  std::string host;
  if (a.starts_with("[")) {
    const size_t close = a.find(']');
    if (close == std::string::npos) return false;
    host = a.substr(1, close - 1);
  } else {
    host = a.substr(0, a.rfind(':'));
  }
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

namespace {

// A gRPC listening address given as HOST:PORT or [ADDRESS]:PORT must have its port in
// [0, 65535] (gRPC would wrap 65537 to port 1, and bind 443 when the port is left out); URIs
// (unix:, ipv4:, dns:...) are gRPC's to check.
Status check_grpc_address(const std::string& address, std::string_view flag) {
  for (std::string_view scheme : {"unix:", "unix-abstract:", "ipv4:", "ipv6:", "dns:", "vsock:"})
    if (address.starts_with(scheme)) return ok_status();
  std::string host;
  int port = 0;
  return parse_http_address(address, &host, &port, flag);
}

}  // namespace

Status validate_serve_options(const ServeOptions& o) {
  LS_RETURN_IF_ERROR(check_grpc_address(o.listen, "--listen"));
  LS_RETURN_IF_ERROR(check_grpc_address(o.admin_listen, "--admin-listen"));
  if (o.admin_token.empty() && !is_loopback_address(o.admin_listen)) {
    return invalid_argument_error(
        "--admin-listen {} is reachable from other machines, so the Admin service needs a token: "
        "set --admin-token or LORASERVE_ADMIN_TOKEN (or listen on 127.0.0.1)",
        o.admin_listen);
  }
  if (o.listen == o.admin_listen && !o.listen.ends_with(":0"))
    return invalid_argument_error("--listen and --admin-listen must differ ({})", o.listen);
  if (!std::isfinite(o.drain_timeout_s) || o.drain_timeout_s < 0)
    return invalid_argument_error("--drain-timeout must be >= 0 seconds, got {}",
                                  o.drain_timeout_s);
  if (o.model_dir.empty()) return invalid_argument_error("no model folder given (--model)");
  if (o.max_request_bytes < 1)
    return invalid_argument_error("--max-request-bytes must be at least 1");
  if (o.max_concurrent_streams < 1)
    return invalid_argument_error("--max-concurrent-streams must be at least 1");
  if (o.max_preparing_bytes < 1)
    return invalid_argument_error("--max-preparing-bytes must be at least 1");
  if (o.load_on_demand && o.adapter_root.empty()) {
    return invalid_argument_error(
        "--load-on-demand loads <adapter-root>/<task>: it needs --adapter-root");
  }
  if (!o.http.listen.empty()) {
    std::string host;
    int port = 0;
    LS_RETURN_IF_ERROR(parse_http_address(o.http.listen, &host, &port));
    if (o.http.threads < 0 || o.http.threads > kMaxHttpThreads) {
      return invalid_argument_error("--http-threads must be in [0, {}] (0: the default), got {}",
                                    kMaxHttpThreads, o.http.threads);
    }
  }
  if (!o.http_admin_listen.empty()) {
    std::string host;
    int port = 0;
    LS_RETURN_IF_ERROR(
        parse_http_address(o.http_admin_listen, &host, &port, "--http-admin-listen"));
    if (o.admin_token.empty() && !is_loopback_address(o.http_admin_listen)) {
      return invalid_argument_error(
          "--http-admin-listen {} is reachable from other machines, so it needs a token: set "
          "--admin-token or LORASERVE_ADMIN_TOKEN (or listen on 127.0.0.1)",
          o.http_admin_listen);
    }
    if (o.http_admin_listen == o.http.listen && !o.http.listen.ends_with(":0")) {
      return invalid_argument_error("--http-listen and --http-admin-listen must differ ({})",
                                    o.http_admin_listen);
    }
  }
  return o.engine.request_limits.validate();
}

std::string served_model_name(const ServeOptions& o) {
  if (!o.served_model_name.empty()) return o.served_model_name;
  std::filesystem::path dir(o.model_dir);
  if (!dir.has_filename()) dir = dir.parent_path();  // "models/demo/"
  return dir.filename().string();
}

Server::Server(ServeOptions options)
    : options_(std::move(options)),
      state_(options_.max_concurrent_streams,
             static_cast<size_t>(std::max<int64_t>(options_.max_preparing_bytes, 1))) {}

Server::~Server() { shutdown(); }

Result<std::unique_ptr<Server>> Server::listen(const ServeOptions& options) {
  LS_RETURN_IF_ERROR(validate_serve_options(options));
  AdminOptions admin;
  if (!options.adapter_root.empty()) {
    LS_ASSIGN_OR_RETURN(AdapterRoot root, AdapterRoot::create(options.adapter_root));
    admin.adapter_root = std::move(root);
  }
  admin.token = options.admin_token;
  admin.load_threads = options.admin_load_threads;
  admin.model_dir = options.model_dir;
  admin.version = options.version;
  admin.max_request_bytes = options.max_request_bytes;
  admin.max_concurrent_streams = options.max_concurrent_streams;

  std::unique_ptr<Server> s(new Server(options));
  LS_ASSIGN_OR_RETURN(s->metrics_, ServerMetrics::create(options.metrics));
  s->state_.set_metrics(s->metrics_.get());
  s->adapter_root_ = admin.adapter_root;
  s->inference_ = std::make_unique<InferenceService>(&s->state_);
  s->admin_ = std::make_unique<AdminService>(&s->state_, std::move(admin));
  s->health_ =
      std::make_unique<HealthService>(std::vector<std::string>{std::string(kInferenceName)});
  s->admin_health_ =
      std::make_unique<HealthService>(std::vector<std::string>{std::string(kAdminName)});
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  int port = 0;
  LS_ASSIGN_OR_RETURN(
      s->server_, start_grpc("--listen", options.listen, {s->inference_.get(), s->health_.get()},
                             options.max_request_bytes, &port));
  s->address_ = bound_address(options.listen, port);
  int admin_port = 0;
  auto admin_server =
      start_grpc("--admin-listen", options.admin_listen, {s->admin_.get(), s->admin_health_.get()},
                 options.max_request_bytes, &admin_port);
  if (!admin_server.ok()) {
    s->server_->Shutdown();
    return admin_server.status();
  }
  s->admin_server_ = std::move(admin_server).value();
  s->admin_address_ = bound_address(options.admin_listen, admin_port);
  if (!options.http.listen.empty() || !options.http_admin_listen.empty()) {
    s->openai_ = std::make_unique<OpenAiService>(
        &s->state_, OpenAiOptions{served_model_name(options), options.version});
  }
  // Stops what listens already when an HTTP listener cannot start.
  auto fail = [&s](Status st) {
    if (s->http_) s->http_->stop();
    s->server_->Shutdown();
    s->admin_server_->Shutdown();
    return st;
  };
  if (!options.http.listen.empty()) {
    HttpOptions http = options.http;
    http.max_body_bytes = static_cast<size_t>(options.max_request_bytes);
    if (http.threads == 0) http.threads = default_http_threads(options.max_concurrent_streams);
    s->http_ = std::make_unique<HttpServer>(http, &s->state_);
    s->openai_->add_routes(*s->http_);
    // Prometheus scrapes here too (it needs no API key), while the model loads as well.
    ServingState* state = &s->state_;
    s->http_->get("/metrics", [state](const httplib::Request&, httplib::Response& res) {
      res.set_content(state->metrics_exposition(), std::string(prometheus::kContentType));
    });
    if (Status st = s->http_->start(); !st.ok()) return fail(st);
    s->http_address_ = s->http_->address();
  }
  if (!options.http_admin_listen.empty()) {
    HttpOptions http;
    http.listen = options.http_admin_listen;
    http.api_key = options.admin_token;
    http.key_name = "admin token (--admin-token)";
    http.threads = kHttpAdminThreads;
    http.max_body_bytes = static_cast<size_t>(options.max_request_bytes);
    s->http_admin_ = std::make_unique<HttpServer>(http, &s->state_);
    add_adapter_admin_routes(*s->http_admin_, s->admin_.get());
    s->openai_->add_model_routes(*s->http_admin_);
    if (Status st = s->http_admin_->start(); !st.ok()) return fail(st);
    s->http_admin_address_ = s->http_admin_->address();
  }
  spdlog::info("listening on {} (inference), {} (admin{}) and {}{}; loading the model", s->address_,
               s->admin_address_, options.admin_token.empty() ? "" : ", token required",
               s->http_ ? fmt::format("http://{} (HTTP{})", s->http_address_,
                                      options.http.api_key.empty() ? "" : ", API key required")
                        : "no HTTP",
               s->http_admin_
                   ? fmt::format(" and http://{} (HTTP adapter admin{})", s->http_admin_address_,
                                 options.admin_token.empty() ? "" : ", token required")
                   : "");
  return s;
}

Status Server::load() {
  const auto t0 = Clock::now();
  LS_ASSIGN_OR_RETURN(engine_,
                      engine::open_engine(options_.model_dir, options_.backend, options_.engine));
  ServerMetrics* metrics = metrics_.get();
  engine_->adapters().set_listener(
      [metrics](const adapters::RegistryEvent& e) { metrics->adapter_event(e); });
  metrics_->set_model_info(served_model_name(options_), *engine_, options_.version);
  for (const auto& [task, dir] : options_.preload) {
    auto loaded = engine_->adapters().load(task, dir, /*replace=*/false);
    if (!loaded.ok()) return loaded.status().with_context("--preload " + task + "=" + dir);
    spdlog::info("admin: preloaded task {} version {} from '{}' (rank {})", task,
                 (*loaded)->version, dir, (*loaded)->adapter->max_rank());
  }
  // Only the public listener serves chat (the admin one has no chat route to log about).
  if (http_) openai_->set_chat_template(chat::ChatTemplate::load(options_.model_dir));
  engine::Engine* e = engine_.get();
  loader_ = std::make_unique<AdapterLoader>(&e->adapters(), adapter_root_, options_.load_on_demand,
                                            options_.engine.max_queue);
  engine_thread_ = std::jthread([e](std::stop_token stop) {
    Status st = e->run_loop(stop);
    if (!st.ok()) spdlog::error("engine loop stopped: {}", st.to_string());
  });
  state_.set_loader(loader_.get());
  state_.set_engine(e);
  health_->set_serving(true);
  admin_health_->set_serving(true);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  spdlog::info(
      "serving {} ({}, {}) on {} after {:.1f} s; admin on {}{}", options_.model_dir,
      e->config().architecture_name, e->backend().describe(), address_, secs, admin_address_,
      http_ ? fmt::format("; HTTP on {} as model '{}'", http_address_, served_model_name(options_))
            : "",
      loader_->on_demand() ? fmt::format("; adapters load on demand from {}", adapter_root_->path())
                           : "");
  return ok_status();
}

void Server::shutdown() {
  if (stopped_) return;
  stopped_ = true;
  state_.start_draining();
  // A server that failed to start has no health services (nor anything else below) yet.
  if (health_) health_->set_serving(false);
  if (admin_health_) admin_health_->set_serving(false);
  // Past a year (10^30 s, say) the drain waits as long as it takes: the time point would
  // overflow.
  const double drain_s = std::min(options_.drain_timeout_s, kForeverSeconds);
  const auto drain =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(drain_s));
  spdlog::info("draining: {} calls in flight, waiting up to {:.0f} s", state_.calls_in_flight(),
               drain_s);
  if (!state_.wait_for_calls(Clock::now() + drain)) {
    // Requests still waiting for room to load their adapter are refused, and the loads in
    // progress end, before the engine's requests are cancelled: those the loads submit too.
    if (loader_) loader_->stop();
    const size_t n = state_.cancel_sequences();
    spdlog::warn("drain timeout: cancelling {} requests still running", n);
    if (!state_.wait_for_calls(Clock::now() + kCancelGrace))
      spdlog::error("{} calls did not end after cancellation", state_.calls_in_flight());
  }
  // Loads still in progress finish (their requests reach the engine, which still runs); no load
  // starts from now on.
  if (loader_) loader_->stop();
  std::this_thread::sleep_for(kLinger);
  if (http_) http_->stop();
  if (http_admin_) http_admin_->stop();
  if (health_) health_->end_watches();
  if (admin_health_) admin_health_->end_watches();
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(1);
  if (server_) server_->Shutdown(deadline);
  if (admin_server_) admin_server_->Shutdown(deadline);
  if (engine_thread_.joinable()) {
    engine_thread_.request_stop();
    engine_thread_.join();
  }
  if (engine_) {
    const engine::EngineStats s = engine_->stats();
    spdlog::info("stopped: {} requests finished, {} tokens generated, {} preemptions",
                 s.requests_finished, s.tokens_generated, s.preemptions);
  }
}

}  // namespace loraserve::server
