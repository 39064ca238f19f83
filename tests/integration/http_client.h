// A small HTTP client for the integration tests (cpp-httplib): JSON requests to a server's HTTP
// address, and Server-Sent Events read event by event from the raw bytes (so the tests check
// the framing themselves). Not thread-safe; make one per thread.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace loraserve::testing {

struct HttpReply {
  int status = 0;  // 0: no answer (connection failed)
  std::string body;
  nlohmann::json json;  // the body parsed; discarded when it is not JSON
  std::string content_type;
  std::string request_id;  // the X-Request-Id header
};

// One SSE event's data ("[DONE]", or a JSON text).
struct SseEvent {
  std::string data;
  nlohmann::json json;  // discarded for [DONE] and non-JSON data
};

class HttpClient {
 public:
  // `address` is host:port; `api_key` (when not empty) goes out as a Bearer token.
  explicit HttpClient(std::string address, std::string api_key = "");

  HttpReply get(const std::string& path) const;
  HttpReply post(const std::string& path, const nlohmann::json& body,
                 const std::vector<std::pair<std::string, std::string>>& headers = {}) const;
  HttpReply post_raw(const std::string& path, const std::string& body,
                     const std::string& content_type = "application/json") const;
  // POSTs and reads the answer as SSE. `on_event` sees each event as it arrives and returns
  // false to drop the connection. The reply carries the status and, unless it was 200, the body.
  HttpReply stream(const std::string& path, const nlohmann::json& body,
                   const std::function<bool(const SseEvent&)>& on_event,
                   const std::vector<std::pair<std::string, std::string>>& headers = {}) const;

 private:
  std::string address_;
  std::string api_key_;
};

// Every event of a complete SSE stream (for answers read whole).
std::vector<SseEvent> parse_sse(const std::string& text);

}  // namespace loraserve::testing
