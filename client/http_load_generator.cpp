#include "client/http_load_generator.h"

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

namespace loraserve::client {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

// One streaming completion on its own connection; returns when it has ended.
void run_request(const HttpLoadOptions& o, const TraceRequest& r, RequestRecord* record,
                 LoadTracker* tracker) {
  httplib::Client http("http://" + o.address);
  const time_t timeout = o.timeout_s > 0 ? static_cast<time_t>(o.timeout_s) + 1 : 24 * 3600;
  http.set_read_timeout(timeout, 0);
  http.set_write_timeout(timeout, 0);
  http.set_connection_timeout(30, 0);
  http.set_tcp_nodelay(true);
  json body = {{"prompt", r.prompt},
               {"max_tokens", r.max_tokens},
               {"temperature", 0},
               {"ignore_eos", true},
               {"stream", true},
               {"return_token_ids", true},
               {"stream_options", {{"include_usage", true}}}};
  if (!r.task_id.empty()) {
    body["model"] = r.task_id;
  } else if (!o.base_model.empty()) {
    body["model"] = o.base_model;
  }
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  if (!o.api_key.empty()) req.set_header("Authorization", "Bearer " + o.api_key);
  int status = 0;
  std::string buffer;
  std::string error_body;
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (status != 200) {
      error_body.append(data, std::min(n, size_t{1000}));
      return true;
    }
    buffer.append(data, n);
    for (size_t end = buffer.find("\n\n"); end != std::string::npos; end = buffer.find("\n\n")) {
      const std::string_view event(buffer.data(), end);
      if (event.starts_with("data: {")) {
        const json j = json::parse(event.substr(6), nullptr, false);
        if (j.contains("error")) {
          record->status = internal_error("stream error: {}", j["error"].dump());
        } else if (j.is_object()) {
          uint32_t tokens = 0;
          for (const json& c : j["choices"])
            if (c.contains("token_ids")) tokens += static_cast<uint32_t>(c["token_ids"].size());
          if (tokens > 0) {
            const auto now = Clock::now();
            if (record->tokens == 0) record->first_token = now;
            record->last_token = now;
            record->tokens += tokens;
            tracker->add_tokens(tokens);
          }
          if (j.contains("usage") && j["usage"].is_object())
            record->prompt_tokens = j["usage"].value("prompt_tokens", 0u);
        }
      }
      buffer.erase(0, end + 2);
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool sent = http.send(req, res, error);
  if (!sent && record->status.ok()) {
    record->status = unavailable_error("HTTP: {}", httplib::to_string(error));
  } else if (status != 200 && record->status.ok()) {
    const json j = json::parse(error_body, nullptr, false);
    const std::string message =
        j.is_object() && j.contains("error") ? j["error"].value("message", "") : error_body;
    record->status = Status(status == 429   ? StatusCode::kResourceExhausted
                            : status == 503 ? StatusCode::kUnavailable
                            : status < 500  ? StatusCode::kInvalidArgument
                                            : StatusCode::kInternal,
                            fmt::format("HTTP {}: {}", status, message));
  }
  tracker->finish_one();
}

}  // namespace

LoadResult run_http_load(const HttpLoadOptions& options, const std::vector<TraceRequest>& trace,
                         const std::function<void(const LoadProgress&)>& progress) {
  LoadTracker tracker;
  std::vector<RequestRecord> records(trace.size());
  std::vector<std::thread> threads;
  threads.reserve(trace.size());
  LoadResult out = drive_trace(
      trace, records, tracker,
      [&](size_t i) {
        records[i].sent = Clock::now();
        threads.emplace_back(run_request, std::cref(options), std::cref(trace[i]), &records[i],
                             &tracker);
      },
      progress);
  for (auto& t : threads) t.join();
  return out;
}

}  // namespace loraserve::client
