#include "tests/integration/http_client.h"

#include <httplib.h>

namespace loraserve::testing {
namespace {

void fill(const httplib::Result& r, HttpReply* out) {
  if (!r) return;
  out->status = r->status;
  out->body = r->body;
  out->json = nlohmann::json::parse(r->body, nullptr, false);
  out->content_type = r->get_header_value("Content-Type");
  out->request_id = r->get_header_value("X-Request-Id");
}

httplib::Client make_client(const std::string& address) {
  httplib::Client c("http://" + address);
  c.set_read_timeout(120, 0);
  c.set_write_timeout(120, 0);
  c.set_connection_timeout(10, 0);
  return c;
}

// Splits complete events ("...\n\n") off the front of `buffer`.
void take_events(std::string* buffer, std::vector<SseEvent>* out) {
  for (size_t end = buffer->find("\n\n"); end != std::string::npos; end = buffer->find("\n\n")) {
    const std::string block = buffer->substr(0, end);
    buffer->erase(0, end + 2);
    SseEvent e;
    e.data = block.starts_with("data: ") ? block.substr(6) : "<not a data line> " + block;
    e.json = nlohmann::json::parse(e.data, nullptr, false);
    out->push_back(std::move(e));
  }
}

}  // namespace

HttpClient::HttpClient(std::string address, std::string api_key)
    : address_(std::move(address)), api_key_(std::move(api_key)) {}

HttpReply HttpClient::get(const std::string& path) const {
  auto c = make_client(address_);
  httplib::Headers headers;
  if (!api_key_.empty()) headers.emplace("Authorization", "Bearer " + api_key_);
  HttpReply out;
  fill(c.Get(path, headers), &out);
  return out;
}

HttpReply HttpClient::post(const std::string& path, const nlohmann::json& body,
                           const std::vector<std::pair<std::string, std::string>>& extra) const {
  auto c = make_client(address_);
  httplib::Headers headers;
  if (!api_key_.empty()) headers.emplace("Authorization", "Bearer " + api_key_);
  for (const auto& [k, v] : extra) headers.emplace(k, v);
  HttpReply out;
  fill(c.Post(path, headers, body.dump(), "application/json"), &out);
  return out;
}

HttpReply HttpClient::post_raw(const std::string& path, const std::string& body,
                               const std::string& content_type) const {
  auto c = make_client(address_);
  httplib::Headers headers;
  if (!api_key_.empty()) headers.emplace("Authorization", "Bearer " + api_key_);
  HttpReply out;
  fill(c.Post(path, headers, body, content_type), &out);
  return out;
}

HttpReply HttpClient::stream(
    const std::string& path, const nlohmann::json& body,
    const std::function<bool(const SseEvent&)>& on_event,
    const std::vector<std::pair<std::string, std::string>>& headers) const {
  auto c = make_client(address_);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  if (!api_key_.empty()) req.set_header("Authorization", "Bearer " + api_key_);
  for (const auto& [k, v] : headers) req.set_header(k, v);
  HttpReply out;
  std::string buffer;
  bool stopped = false;
  req.response_handler = [&](const httplib::Response& r) {
    out.status = r.status;
    out.content_type = r.get_header_value("Content-Type");
    out.request_id = r.get_header_value("X-Request-Id");
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (out.status != 200) {
      out.body.append(data, n);
      return true;
    }
    buffer.append(data, n);
    std::vector<SseEvent> events;
    take_events(&buffer, &events);
    for (const SseEvent& e : events) {
      if (!on_event(e)) {
        stopped = true;
        return false;
      }
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  c.send(req, res, error);
  if (!stopped && out.status != 200 && out.status != 0) {
    out.json = nlohmann::json::parse(out.body, nullptr, false);
  }
  if (!buffer.empty() && !stopped) out.body = "<trailing bytes> " + buffer;
  return out;
}

std::vector<SseEvent> parse_sse(const std::string& text) {
  std::string buffer = text;
  std::vector<SseEvent> out;
  take_events(&buffer, &out);
  return out;
}

}  // namespace loraserve::testing
