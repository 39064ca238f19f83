// HttpServer: the HTTP/1.1 listener of `loraserve serve`, on cpp-httplib. A pool of threads
// serves the connections, one connection per thread while it is open (a streaming response
// holds its thread until it ends); a connection that finds no idle thread starts one, up to
// --http-threads (by default the streams the server admits plus kSpareHttpThreads, so /health
// still answers while every admitted stream is open); connections beyond it wait for a thread. It
// owns what every route shares: the API key (`Authorization: Bearer KEY` on /v1/*, /tokenize and
// /detokenize, compared in constant time), the request body limit, `GET /health` (200 while
// serving, 503 while the model loads or the server drains), and errors in OpenAI's JSON shape for
// what no route answers (404, 413, malformed HTTP). Routes are added before start(); the handlers
// run on the pool's threads. start() and stop() are called from one thread; the rest is thread-safe
// once started.
#pragma once

#include <httplib.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "server/connection_watcher.h"
#include "server/serving_state.h"

namespace loraserve::server {

// The most connection threads --http-threads may ask for.
inline constexpr int32_t kMaxHttpThreads = 4096;
// Threads the default pool holds beyond --max-concurrent-streams: with every stream the server
// admits open, /health, /metrics, /v1/models and the refusals of further streams still get one.
inline constexpr int32_t kSpareHttpThreads = 64;
// The default --http-threads: max_concurrent_streams + kSpareHttpThreads, at most
// kMaxHttpThreads.
int32_t default_http_threads(int32_t max_concurrent_streams);

struct HttpOptions {
  std::string listen = "127.0.0.1:8080";  // host:port (port 0 picks a free one); "": off
  std::string api_key;                    // empty: the API routes need no key
  std::string key_name = "API key";       // what a 401 calls the key
  // Connections served at once (serve: 0 is default_http_threads(--max-concurrent-streams)).
  // Threads start as connections need them and then stay.
  int32_t threads = 256;
  size_t max_body_bytes = 16u << 20;  // larger request bodies get 413 (serve: --max-request-bytes)
};

// Splits "host:port" or "[v6]:port" into its parts, the port in [0, 65535]; errors name `flag`
// (the gRPC listeners' addresses are checked with it too).
Status parse_http_address(const std::string& address, std::string* host, int* port,
                          std::string_view flag = "--http-listen");

// Constant-time equality (the time depends on the lengths only), for secrets.
bool secret_equals(const std::string& a, const std::string& b);

// The HTTP status of a gRPC canonical code: INVALID_ARGUMENT, FAILED_PRECONDITION and
// OUT_OF_RANGE 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404, ALREADY_EXISTS and
// ABORTED 409, RESOURCE_EXHAUSTED 429, CANCELLED 499, UNIMPLEMENTED 501, UNAVAILABLE 503,
// DEADLINE_EXCEEDED 504, the rest 500.
int http_status_of(StatusCode code);

// OpenAI's error object for `status`: {"error": {"message", "type", "param", "code"}}, with
// type "invalid_request_error" for 4xx ("rate_limit_error" for 429) and "server_error" for 5xx;
// `param` and `code` are null when empty.
std::string openai_error_json(const Status& status, std::string_view param = {},
                              std::string_view code = {});
// Sets the response's HTTP status and its body to openai_error_json(...).
void set_openai_error(httplib::Response& res, const Status& status, std::string_view param = {},
                      std::string_view code = {});

class HttpServer {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

  // `state` (for /health) must outlive the server.
  HttpServer(HttpOptions options, ServingState* state);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // REQUIRES: before start().
  void get(const std::string& path, Handler handler);
  void post(const std::string& path, Handler handler);
  // GET of `prefix` followed by one or more characters, which the handler finds in
  // req.matches[1] (/v1/models/{model}).
  void get_under(const std::string& prefix, Handler handler);

  // Binds and starts serving on a thread of its own. UNAVAILABLE when the address cannot be
  // bound.
  Status start();
  // Stops accepting, ends idle connections and waits for the handlers in progress (and their
  // streams) to end; idempotent.
  void stop();

  // The address bound, with the port chosen when the option said port 0.
  const std::string& address() const { return address_; }

  // Tells handlers that wait when their client has gone.
  ConnectionWatcher& watcher() { return watcher_; }

 private:
  class Listener;

  HttpOptions options_;
  ServingState* state_;
  std::unique_ptr<Listener> listener_;
  ConnectionWatcher watcher_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  std::string address_;
};

}  // namespace loraserve::server
