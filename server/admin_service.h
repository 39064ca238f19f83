// AdminService: loraserve.v1.Admin, served on the admin address only. Every call first passes
// the bearer-token check (when a token is set) and needs an adapter root; then its request is
// parsed from raw bytes (a malformed one is INVALID_ARGUMENT naming the field, not gRPC's
// INTERNAL) and its task ID checked against the engine's RequestLimits before anything else. Loads
// and unloads run one at a time on the service's own worker thread (reading an adapter never holds
// a gRPC thread, and admin actions are ordered); the read-only calls answer inline. Thread-safe.
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
  std::string version;            // loraserve's
  int32_t max_request_bytes = 0;  // the transport's limits, for GetServerInfo
  int32_t max_concurrent_streams = 0;
};

using AdminServiceBase = v1::Admin::WithRawCallbackMethod_LoadAdapter<
    v1::Admin::WithRawCallbackMethod_UnloadAdapter<v1::Admin::WithRawCallbackMethod_ListAdapters<
        v1::Admin::WithRawCallbackMethod_GetServerInfo<
            v1::Admin::WithRawCallbackMethod_GetStats<v1::Admin::Service>>>>>;

class AdminService final : public AdminServiceBase {
 public:
  AdminService(ServingState* state, AdminOptions options)
      : state_(state), options_(std::move(options)) {}

  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListAdapters(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;

 private:
  // UNAUTHENTICATED without the token, FAILED_PRECONDITION without an adapter root,
  // UNAVAILABLE while the model loads.
  Status check_access(const grpc::CallbackServerContext& context) const;
  // A read-only call, answered inline: the access check, the request parsed, then
  // fill(response) when both pass.
  template <typename Request, typename Response, typename Fill>
  grpc::ServerUnaryReactor* answer(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request, grpc::ByteBuffer* response,
                                   Fill fill);
  // A load or unload: the access check, the request parsed and check(request) (a refusal is
  // logged), then action(request, peer, response) on the worker, whose status ends the call.
  template <typename Request, typename Response, typename Check, typename Action>
  grpc::ServerUnaryReactor* queue_action(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response, const char* what, Check check,
                                         Action action);
  Status load(const v1::LoadAdapterRequest& request, const std::string& peer,
              v1::AdapterInfo* response);
  Status unload(const v1::UnloadAdapterRequest& request, const std::string& peer,
                v1::UnloadAdapterResponse* response);
  ServingState* state_;
  AdminOptions options_;
  Executor worker_;  // loads and unloads, one at a time
};

}  // namespace loraserve::server
