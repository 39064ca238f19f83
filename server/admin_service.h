// AdminService: loraserve.v1.Admin, served on the admin address only. Every call first passes
// the bearer-token check (when a token is set) and needs an adapter root. Loads and unloads run
// one at a time on the service's own worker thread (reading an adapter never holds a gRPC
// thread, and admin actions are ordered); the read-only calls answer inline. Thread-safe.
// `state` must outlive it; destroy it after the gRPC server that serves it has shut down.
#pragma once

#include <optional>
#include <string>

#include "loraserve/v1/admin.grpc.pb.h"
#include "server/adapter_root.h"
#include "server/executor.h"
#include "server/serving_state.h"

namespace loraserve::server {

struct AdminOptions {
  std::optional<AdapterRoot> adapter_root;  // absent: every call is FAILED_PRECONDITION
  std::string token;                        // empty: no token needed
  std::string model_dir;
  std::string version;  // loraserve's
};

class AdminService final : public v1::Admin::CallbackService {
 public:
  AdminService(ServingState* state, AdminOptions options)
      : state_(state), options_(std::move(options)) {}

  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* context,
                                        const v1::LoadAdapterRequest* request,
                                        v1::AdapterInfo* response) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* context,
                                          const v1::UnloadAdapterRequest* request,
                                          v1::UnloadAdapterResponse* response) override;
  grpc::ServerUnaryReactor* ListAdapters(grpc::CallbackServerContext* context,
                                         const v1::ListAdaptersRequest* request,
                                         v1::ListAdaptersResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::GetServerInfoResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;

 private:
  // UNAUTHENTICATED without the token, FAILED_PRECONDITION without an adapter root,
  // UNAVAILABLE while the model loads.
  Status check_access(const grpc::CallbackServerContext& context) const;
  // A read-only call, answered inline: the access check, then fill() when it passes.
  template <typename Fill>
  grpc::ServerUnaryReactor* answer(grpc::CallbackServerContext* context, Fill fill);
  // A load or unload of `task_id`: the access check (a refusal is logged), then action(peer) on
  // the worker, whose status ends the call.
  template <typename Action>
  grpc::ServerUnaryReactor* queue_action(grpc::CallbackServerContext* context, const char* what,
                                         const std::string& task_id, Action action);
  Status load(const v1::LoadAdapterRequest& request, const std::string& peer,
              v1::AdapterInfo* response);
  Status unload(const v1::UnloadAdapterRequest& request, const std::string& peer,
                v1::UnloadAdapterResponse* response);
  ServingState* state_;
  AdminOptions options_;
  Executor worker_;  // loads and unloads, one at a time
};

}  // namespace loraserve::server
