// Client: the C++ client of a loraserve server. Blocking calls over one channel to the
// inference address and one to the admin address (the admin token, when given, is sent as
// `authorization: Bearer <token>`). gRPC errors come back as Status with the same code and
// message. Thread-safe: calls may run concurrently from many threads.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "grpc_health/v1/health.grpc.pb.h"
#include "loraserve/v1/admin.grpc.pb.h"
#include "loraserve/v1/inference.grpc.pb.h"

namespace loraserve::client {

struct ClientOptions {
  std::string address = "127.0.0.1:50051";        // Inference
  std::string admin_address = "127.0.0.1:50052";  // Admin
  std::string admin_token;                        // empty: none sent
  double timeout_s = 0.0;                         // per call; 0: no deadline
};

using HealthStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

// The routing key: every call that names a task also carries the task ID as this gRPC metadata
// (an HTTP/2 header), so that a load balancer can route by task without parsing the protobuf
// body (nginx `hash $http_x_loraserve_task consistent`, HAProxy `balance hdr(x-loraserve-task)`;
// see docs/scaling.md). The server does not read it: the task is the one in the message.
inline constexpr char kTaskMetadataKey[] = "x-loraserve-task";

// Adds the routing key for `task_id` to `context`. Nothing is added for the base model (""; any
// replica serves it, and balancers spread calls without the key) nor for a task ID that cannot be
// a metadata value (over kMaxTaskMetadataBytes, or bytes outside printable ASCII): the server
// rejects such an ID with INVALID_ARGUMENT naming task_id, an error the transport would otherwise
// replace with its own.
inline constexpr size_t kMaxTaskMetadataBytes = 1024;
void add_task_metadata(grpc::ClientContext* context, const std::string& task_id);
// Whether add_task_metadata sends `task_id`; HTTP clients send the same header on the same terms.
bool routable_task_id(const std::string& task_id);

class Client {
 public:
  explicit Client(ClientOptions options);

  Result<v1::GenerateResponse> generate(const v1::GenerateRequest& request) const;
  // Calls `on_message` with every streamed message as it arrives; returning false from it
  // cancels the call (the result is then CANCELLED). Returns the call's final status.
  Status generate_stream(
      const v1::GenerateRequest& request,
      const std::function<bool(const v1::GenerateStreamResponse&)>& on_message) const;
  Result<v1::TokenizeResponse> tokenize(const std::string& text, bool add_special_tokens) const;

  Result<v1::AdapterInfo> load_adapter(const std::string& task_id, const std::string& path,
                                       bool replace) const;
  Result<v1::UnloadAdapterResponse> unload_adapter(const std::string& task_id) const;
  Result<v1::ListAdaptersResponse> list_adapters() const;
  Result<v1::GetServerInfoResponse> server_info() const;
  Result<v1::GetStatsResponse> stats() const;

  // grpc.health.v1 Check of `service` ("" for the whole server) on the inference address, or on
  // the admin address with `admin`.
  Result<HealthStatus> health(const std::string& service, bool admin) const;

  // For asynchronous use (the load generator).
  v1::Inference::Stub& inference() const { return *inference_; }
  const ClientOptions& options() const { return options_; }

 private:
  // The deadline, the admin token when `admin`, and the routing key of `task_id`.
  void prepare(grpc::ClientContext* context, bool admin, const std::string& task_id = "") const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<grpc::Channel> admin_channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::unique_ptr<grpc::health::v1::Health::Stub> admin_health_;
};

// grpc::Status → Status (the codes are the same).
Status from_grpc(const grpc::Status& status);

}  // namespace loraserve::client
