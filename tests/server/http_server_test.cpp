// The HTTP listener's pure parts: address parsing, the secret comparison, the gRPC-code to
// HTTP-status mapping and OpenAI's error object; and the listener itself on loopback: /health
// through loading, serving and draining, the API key, and OpenAI-shaped 404 and 413 answers.
#include "server/http_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

namespace loraserve::server {
namespace {

TEST(HttpServer, ParsesAddresses) {
  std::string host;
  int port = -1;
  ASSERT_TRUE(parse_http_address("127.0.0.1:8080", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 8080);
  ASSERT_TRUE(parse_http_address("[::1]:0", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 0);
  ASSERT_TRUE(parse_http_address("localhost:1", &host, &port).ok());
  EXPECT_EQ(host, "localhost");
  for (const char* bad : {"", "8080", ":8080", "host:", "host:x", "host:65536", "host:-1", "::1:80",
                          "[::1]", "[::1]80", "host:80x"}) {
    const Status st = parse_http_address(bad, &host, &port);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("--http-listen"), std::string::npos) << st.message();
  }
}

TEST(HttpServer, SecretEquals) {
  EXPECT_TRUE(secret_equals("abc", "abc"));
  EXPECT_TRUE(secret_equals("", ""));
  EXPECT_FALSE(secret_equals("abc", "abd"));
  EXPECT_FALSE(secret_equals("abc", "abcd"));
  EXPECT_FALSE(secret_equals("abc", ""));
  EXPECT_FALSE(secret_equals(std::string("a\0b", 3), std::string("a\0c", 3)));
}

TEST(HttpServer, StatusMapping) {
  EXPECT_EQ(http_status_of(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(http_status_of(StatusCode::kFailedPrecondition), 400);
  EXPECT_EQ(http_status_of(StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(http_status_of(StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(http_status_of(StatusCode::kNotFound), 404);
  EXPECT_EQ(http_status_of(StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(http_status_of(StatusCode::kUnavailable), 503);
  EXPECT_EQ(http_status_of(StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(http_status_of(StatusCode::kInternal), 500);
}

TEST(HttpServer, OpenAiErrorObject) {
  auto j = nlohmann::json::parse(openai_error_json(invalid_argument_error("bad n"), "n"));
  EXPECT_EQ(j, nlohmann::json::parse(
                   R"({"error": {"message": "bad n", "type": "invalid_request_error",
                                 "param": "n", "code": null}})"));
  j = nlohmann::json::parse(openai_error_json(resource_exhausted_error("full")));
  EXPECT_EQ(j["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(j["error"]["param"].is_null());
  j = nlohmann::json::parse(openai_error_json(unavailable_error("later"), "", "overloaded"));
  EXPECT_EQ(j["error"]["type"], "server_error");
  EXPECT_EQ(j["error"]["code"], "overloaded");
  // Malformed UTF-8 in a message (an echoed input) still gives valid JSON.
  j = nlohmann::json::parse(openai_error_json(invalid_argument_error("x\xff")));
  EXPECT_EQ(j["error"]["message"], "x\xef\xbf\xbd");
}

nlohmann::json body_of(const httplib::Result& r) {
  return nlohmann::json::parse(r->body, nullptr, false);
}

TEST(HttpServer, HealthKeyAndErrorsOnLoopback) {
  ServingState state(16);
  HttpOptions options;
  options.listen = "127.0.0.1:0";
  options.api_key = "sekret";
  options.max_body_bytes = 1000;
  HttpServer http(options, &state);
  http.post("/v1/echo", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(req.body, "text/plain");
  });
  ASSERT_TRUE(http.start().ok());
  const std::string address = http.address();
  ASSERT_TRUE(address.starts_with("127.0.0.1:")) << address;
  httplib::Client client("http://" + address);

  // Loading: no engine yet.
  auto r = client.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(body_of(r)["error"]["type"], "server_error");

  // The key guards /v1/* only.
  r = client.Post("/v1/echo", "hi", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(body_of(r)["error"]["code"], "invalid_api_key");
  r = client.Post("/v1/echo", {{"Authorization", "Bearer wrong"}}, "hi", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = client.Post("/v1/echo", {{"Authorization", "Bearer sekret"}}, "hi", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hi");

  r = client.Post("/v1/echo", {{"Authorization", "Bearer sekret"}}, std::string(2000, 'x'),
                  "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(body_of(r)["error"]["message"].get<std::string>().find("1000 bytes"),
            std::string::npos);

  r = client.Get("/nowhere");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(body_of(r)["error"]["message"], "no route for GET /nowhere");

  // Draining.
  state.start_draining();
  r = client.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(r->body.find("shutting down"), std::string::npos);
  http.stop();
}

TEST(HttpServer, BusyPortIsAnError) {
  ServingState state(16);
  HttpOptions options;
  options.listen = "127.0.0.1:0";
  HttpServer first(options, &state);
  ASSERT_TRUE(first.start().ok());
  options.listen = first.address();
  HttpServer second(options, &state);
  const Status st = second.start();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.to_string();
}

}  // namespace
}  // namespace loraserve::server
