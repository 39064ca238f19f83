#include "server/http_server.h"

#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <system_error>
#include <vector>

#include "common/excerpt.h"

namespace loraserve::server {
namespace {

// Idle keep-alive connections hold a pool thread; this bounds how long.
constexpr time_t kKeepAliveSeconds = 2;
constexpr size_t kKeepAliveRequests = 1000;
// A client that sends nothing (or reads nothing) for this long loses its connection.
constexpr time_t kIoTimeoutSeconds = 30;
// How long stop() waits for the library's connection threads before the process exits anyway.
constexpr std::chrono::seconds kStopSeconds(10);

// The library's task queue (one job per connection), growing: a connection that finds no idle
// thread starts one, up to `max`; a thread that has started stays for the next connections. So
// an idle server holds a few threads and a busy one a thread per open connection, where the
// library's own pool starts all of them up front. When the system refuses a thread, the
// connection waits for one that exists.
class GrowingPool final : public httplib::TaskQueue {
 public:
  explicit GrowingPool(size_t max) : max_(max) {}

  void enqueue(std::function<void()> fn) override {
    std::unique_lock lock(mu_);
    if (idle_ <= jobs_.size() && threads_.size() < max_ && !stopping_) {
      try {
        threads_.emplace_back([this] { work(); });
      } catch (const std::system_error& e) {
        if (warned_at_ != threads_.size()) {
          warned_at_ = threads_.size();
          spdlog::warn("http: cannot start connection thread {} ({}); connections wait for one",
                       threads_.size() + 1, e.what());
        }
        if (threads_.empty()) {  // none would ever serve it: this (the accepting) thread does
          lock.unlock();
          fn();
          return;
        }
      }
    }
    jobs_.push_back(std::move(fn));
    cv_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();  // no thread starts once stopping_ is set
  }

 private:
  void work() {
    std::unique_lock lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [this] { return !jobs_.empty() || stopping_; });
      --idle_;
      if (jobs_.empty()) return;  // stopping, nothing left to run
      std::function<void()> fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      fn = nullptr;  // the connection's state goes before the thread waits again
      lock.lock();
    }
  }

  const size_t max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;  // threads waiting for a job
  size_t warned_at_ = 0;
  bool stopping_ = false;
};

std::string escape_regex(const std::string& path) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(path, special, R"(\$&)");
}

}  // namespace

int32_t default_http_threads(int32_t max_concurrent_streams) {
  return static_cast<int32_t>(
      std::min<int64_t>(int64_t{max_concurrent_streams} + kSpareHttpThreads, kMaxHttpThreads));
}

Status parse_http_address(const std::string& address, std::string* host, int* port,
                          std::string_view flag) {
  std::string port_text;
  if (address.starts_with("[")) {
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':')
      return invalid_argument_error("{} {} is not [ADDRESS]:PORT", flag, excerpt(address));
    *host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos || address.find(':') != colon)
      return invalid_argument_error("{} {} is not HOST:PORT (IPv6: [ADDRESS]:PORT)", flag,
                                    excerpt(address));
    *host = address.substr(0, colon);
    port_text = address.substr(colon + 1);
  }
  int value = -1;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
  if (host->empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      value < 0 || value > 65535)
    return invalid_argument_error("{} {}: expected HOST:PORT with PORT in [0, 65535]", flag,
                                  excerpt(address));
  *port = value;
  return ok_status();
}

bool secret_equals(const std::string& a, const std::string& b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

int http_status_of(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kAborted:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kCancelled:
      return 499;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kUnknown:
    case StatusCode::kInternal:
    case StatusCode::kDataLoss:
      return 500;
  }
  return 500;
}

std::string openai_error_json(const Status& status, std::string_view param, std::string_view code) {
  const int http = http_status_of(status.code());
  const char* type = http == 429  ? "rate_limit_error"
                     : http < 500 ? "invalid_request_error"
                                  : "server_error";
  nlohmann::json error = {
      {"message", status.message()}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) error["param"] = param;
  if (!code.empty()) error["code"] = code;
  return nlohmann::json{{"error", error}}.dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace);
}

void set_openai_error(httplib::Response& res, const Status& status, std::string_view param,
                      std::string_view code) {
  res.status = http_status_of(status.code());
  res.set_content(openai_error_json(status, param, code), "application/json");
}

// cpp-httplib's server, with the accept backlog widened: Debian's build listens with a backlog
// of 5, so connections that arrive together beyond it are dropped and retried by the client a
// second later. Listening again on the bound socket raises it.
class HttpServer::Listener final : public httplib::Server {
 public:
  bool widen_backlog() { return ::listen(svr_sock_, SOMAXCONN) == 0; }
};

HttpServer::HttpServer(HttpOptions options, ServingState* state)
    : options_(std::move(options)), state_(state), listener_(std::make_unique<Listener>()) {
  Listener& l = *listener_;
  const size_t threads = static_cast<size_t>(std::max(options_.threads, 1));
  l.new_task_queue = [threads] { return new GrowingPool(threads); };
  // Only SO_REUSEADDR: the library's default adds SO_REUSEPORT, which would let a second server
  // bind the same port and take half of its connections.
  l.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  l.set_tcp_nodelay(true);  // SSE chunks are small and must leave at once
  l.set_keep_alive_timeout(kKeepAliveSeconds);
  l.set_keep_alive_max_count(kKeepAliveRequests);
  l.set_read_timeout(kIoTimeoutSeconds, 0);
  l.set_write_timeout(kIoTimeoutSeconds, 0);
  l.set_payload_max_length(options_.max_body_bytes);

  const std::string key = options_.api_key;
  const std::string missing = fmt::format(
      "missing or wrong {}: send the header 'Authorization: Bearer <key>'", options_.key_name);
  l.set_pre_routing_handler([key, missing](const httplib::Request& req, httplib::Response& res) {
    if (key.empty() ||
        !(req.path.starts_with("/v1/") || req.path == "/tokenize" || req.path == "/detokenize"))
      return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (auth.size() > kBearer.size() && auth.compare(0, kBearer.size(), kBearer) == 0 &&
        secret_equals(auth.substr(kBearer.size()), key)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    set_openai_error(res, unauthenticated_error("{}", missing), {}, "invalid_api_key");
    res.set_header("WWW-Authenticate", "Bearer");
    return httplib::Server::HandlerResponse::Handled;
  });
  const size_t max_body = options_.max_body_bytes;
  l.set_error_handler(httplib::Server::HandlerWithResponse(
      [max_body](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // a route's own
        Status st;
        switch (res.status) {
          case 404:
            st = not_found_error("no route for {} {}", req.method, req.path.substr(0, 200));
            break;
          case 413:
            st = invalid_argument_error("the request body is larger than {} bytes", max_body);
            break;
          default:
            st = Status(res.status >= 500 ? StatusCode::kInternal : StatusCode::kInvalidArgument,
                        fmt::format("HTTP {}: the request could not be read", res.status));
        }
        const int http = res.status;
        set_openai_error(res, st);
        res.status = http;
        return httplib::Server::HandlerResponse::Handled;
      }));
  l.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("http {} {}: {}", req.method, req.path.substr(0, 200), what);
        set_openai_error(res, internal_error("internal error: {}", what));
      });
  l.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    spdlog::debug("http {} {} from {}:{} -> {}", req.method, req.path.substr(0, 200),
                  req.remote_addr, req.remote_port, res.status);
  });

  get("/health", [state](const httplib::Request&, httplib::Response& res) {
    if (state->draining()) {
      set_openai_error(res, unavailable_error("the server is shutting down"));
    } else if (state->engine() == nullptr) {
      set_openai_error(res, unavailable_error("the model is still loading"));
    } else {
      res.set_content(R"({"status":"serving"})", "application/json");
    }
  });
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::get(const std::string& path, Handler handler) {
  listener_->Get(escape_regex(path), std::move(handler));
}

void HttpServer::get_under(const std::string& prefix, Handler handler) {
  listener_->Get(escape_regex(prefix) + "(.+)", std::move(handler));
}

void HttpServer::post(const std::string& path, Handler handler) {
  // The body is read here, not by the library: Debian's cpp-httplib (0.11) caps a body sent
  // with Content-Length but buffers a chunked one whole, however large, and refuses a form-
  // encoded one past 8 KiB as "too large" (curl -d sends JSON as a form).
  const size_t max_body = options_.max_body_bytes;
  listener_->Post(escape_regex(path), [handler = std::move(handler), max_body](
                                          const httplib::Request& req, httplib::Response& res,
                                          const httplib::ContentReader& content) {
    if (req.is_multipart_form_data()) {
      set_openai_error(res, invalid_argument_error("the request body must be JSON, not "
                                                   "multipart/form-data"));
      res.status = 415;
      return;
    }
    httplib::Request request = req;
    // Room for the whole body at once when its length is told (appending doubled the buffer).
    const auto told = req.get_header_value<uint64_t>("Content-Length");
    if (told <= max_body) request.body.reserve(told);
    bool too_large = false;
    const bool read = content([&](const char* data, size_t n) {
      if (n > max_body - request.body.size()) {
        too_large = true;
        return false;  // stops reading: nothing past the cap is buffered
      }
      request.body.append(data, n);
      return true;
    });
    if (too_large || res.status == 413) {
      set_openai_error(res, invalid_argument_error("the request body is larger than {} bytes "
                                                   "(--max-request-bytes)",
                                                   max_body));
      res.status = 413;
      return;
    }
    if (!read) {
      set_openai_error(res, invalid_argument_error("the request body could not be read (cut "
                                                   "short, or malformed chunked encoding)"));
      return;
    }
    handler(request, res);
  });
}

Status HttpServer::start() {
  std::string host;
  int port = 0;
  LS_RETURN_IF_ERROR(parse_http_address(options_.listen, &host, &port));
  if (port == 0) {
    port = listener_->bind_to_any_port(host);
    if (port <= 0) port = 0;
  } else if (!listener_->bind_to_port(host, port)) {
    port = 0;
  }
  if (port == 0) {
    return unavailable_error(
        "--http-listen: cannot listen on '{}' (address in use, or not an address of this machine)",
        options_.listen);
  }
  if (!listener_->widen_backlog())
    spdlog::warn("http: could not raise the listen backlog; bursts of connections may wait");
  address_ =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  thread_ = std::thread([this] {
    listener_->listen_after_bind();
    listen_returned_.store(true);
  });
  // stop() only stops a server that runs: wait until the accept loop has started.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!listener_->is_running()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return internal_error("the HTTP listener on {} did not start", address_);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return ok_status();
}

void HttpServer::stop() {
  if (!thread_.joinable()) return;
  listener_->stop();
  // The library joins its connection threads, and a client that trickles its headers (a byte
  // before each read timeout) holds one for as long as it likes. By now every request has been
  // answered or cancelled (the drain), so such a client cannot hold up the process's exit.
  const auto deadline = std::chrono::steady_clock::now() + kStopSeconds;
  while (!listen_returned_.load()) {
    if (std::chrono::steady_clock::now() > deadline) {
      spdlog::error(
          "http: connections still held open {} s after the listener stopped (clients "
          "that never finish their request); exiting without them",
          kStopSeconds.count());
      spdlog::default_logger()->flush();
      std::_Exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  thread_.join();
}

}  // namespace loraserve::server
