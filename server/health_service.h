// HealthService: grpc.health.v1.Health (Check and Watch) for one gRPC server, so that grpcurl,
// Kubernetes gRPC probes and `loractl health` see exactly what the server is doing: NOT_SERVING
// from the first moment it listens until the model is loaded, SERVING then, NOT_SERVING again
// as soon as it drains. Knows the overall service "" and the service names it is given.
// Thread-safe; every Watch stream is ended by end_watches() (call it before shutting down).
#pragma once

#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "grpc_health/v1/health.grpc.pb.h"

namespace loraserve::server {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // Starts NOT_SERVING for "" and each of `services`.
  explicit HealthService(std::vector<std::string> services) : services_(std::move(services)) {}

  // Sets every known service to SERVING or NOT_SERVING and tells the watchers.
  void set_serving(bool serving);
  // Sends the watchers the current status and ends their streams (OK).
  void end_watches();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

  class Watcher;

 private:
  bool known(const std::string& service) const;
  // REQUIRES: mu_ held.
  ServingStatus status_of(const std::string& service) const;
  void remove(Watcher* watcher);

  const std::vector<std::string> services_;
  mutable std::mutex mu_;
  bool serving_ = false;
  bool ended_ = false;
  std::set<Watcher*> watchers_;
};

}  // namespace loraserve::server
