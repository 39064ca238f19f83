// The Server in-process: it listens before the model loads (health NOT_SERVING, calls
// UNAVAILABLE), serves once loaded, and refuses calls once shut down.
#include "server/server.h"

#include <gtest/gtest.h>

#include "client/client.h"

namespace loraserve::server {
namespace {

constexpr char kModel[] = "tests/reference/fixtures/llama_mha_f32";

v1::GenerateRequest small_request() {
  v1::GenerateRequest r;
  for (int32_t id : {5, 6, 7}) r.mutable_token_ids()->add_ids(id);
  r.mutable_params()->set_max_tokens(4);
  r.mutable_params()->set_temperature(0.0f);
  return r;
}

ServeOptions options() {
  ServeOptions o;
  o.model_dir = kModel;
  o.listen = "127.0.0.1:0";
  o.admin_listen = "127.0.0.1:0";
  o.adapter_root = std::string(kModel) + "/adapters";
  o.backend.device = "cpu";
  o.drain_timeout_s = 5;
  return o;
}

TEST(Server, NotServingUntilLoadedThenServingThenGone) {
  auto server = Server::listen(options());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::ClientOptions co;
  co.address = (*server)->address();
  co.admin_address = (*server)->admin_address();
  co.timeout_s = 10;
  client::Client client(co);

  auto health = client.health("", false);
  ASSERT_TRUE(health.ok()) << health.status().to_string();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  auto admin_health = client.health("loraserve.v1.Admin", true);
  ASSERT_TRUE(admin_health.ok());
  EXPECT_EQ(*admin_health, grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  auto loading = client.generate(small_request());
  EXPECT_EQ(loading.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(loading.status().message().find("loading"), std::string::npos);
  EXPECT_EQ(client.list_adapters().status().code(), StatusCode::kUnavailable);

  ASSERT_TRUE((*server)->load().ok());
  health = client.health("loraserve.v1.Inference", false);
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
  auto r = client.generate(small_request());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->token_ids_size(), 4);
  EXPECT_EQ(r->finish_reason(), v1::FINISH_REASON_LENGTH);
  auto loaded = client.load_adapter("t", "all7_r8", false);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  EXPECT_EQ(loaded->path(), "all7_r8");

  (*server)->shutdown();
  EXPECT_FALSE(client.generate(small_request()).ok());
  (*server)->shutdown();  // idempotent
}

TEST(Server, ListenFailsOnABusyPort) {
  auto first = Server::listen(options());
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  ServeOptions o = options();
  o.listen = (*first)->address();
  auto second = Server::listen(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find((*first)->address()), std::string::npos);
}

TEST(Server, BadAdapterRootIsRefusedBeforeListening) {
  ServeOptions o = options();
  o.adapter_root = "/nonexistent/root";
  auto s = Server::listen(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/nonexistent/root"), std::string::npos);
}

TEST(Server, PreloadFailureNamesTheFlag) {
  ServeOptions o = options();
  o.preload = {{"bad", "/nonexistent/adapter"}};
  auto s = Server::listen(o);
  ASSERT_TRUE(s.ok());
  Status st = (*s)->load();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("--preload bad=/nonexistent/adapter"), std::string::npos)
      << st.message();
}

}  // namespace
}  // namespace loraserve::server
