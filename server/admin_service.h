// AdminService: loraserve.v1.Admin, served on the admin address only. Every call first passes
// the bearer-token check (when a token is set) and needs an adapter root; then its request is
// parsed from raw bytes (a malformed one is INVALID_ARGUMENT naming the field, not gRPC's
// INTERNAL) and its task ID checked against the engine's RequestLimits before anything else. The
// read-only calls then answer inline. Loads and unloads run on the service's own workers
// (KeyedExecutor, keyed by task ID): reading an adapter never holds a gRPC thread, actions on one
// task apply in the order they arrived, and a slow load holds up only its own task. A load whose
// client has given up (the call was cancelled or its deadline passed) before the new version is
// installed never takes effect: the registry checks under its lock, right before the swap. Every
// file a load reads must lie inside --adapter-root (common/untrusted_file.h). Thread-safe.
// `state` must outlive it; destroy it after the gRPC server that serves it has shut down.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "loraserve/v1/admin.grpc.pb.h"
#include "server/adapter_root.h"
#include "server/keyed_executor.h"
#include "server/serving_state.h"

namespace loraserve::server {

// Whether the client of one admin call still waits for it: false once the call is cancelled or
// its deadline has passed. Thread-safe.
class AdminCall {
 public:
  explicit AdminCall(std::chrono::system_clock::time_point deadline) : deadline_(deadline) {}
  void cancel() { cancelled_.store(true); }
  // OK while the client waits; CANCELLED or DEADLINE_EXCEEDED (saying that `what` was not
  // applied) once it does not.
  Status still_wanted(std::string_view what) const;

 private:
  std::chrono::system_clock::time_point deadline_;
  std::atomic<bool> cancelled_{false};
};

struct AdminOptions {
  std::optional<AdapterRoot> adapter_root;  // absent: every call is FAILED_PRECONDITION
  std::string token;                        // empty: no token needed
  std::string model_dir;
  std::string version;            // loraserve's
  int32_t max_request_bytes = 0;  // the transport's limits, for GetServerInfo
  int32_t max_concurrent_streams = 0;
  int32_t load_threads = 4;  // loads and unloads of different tasks that run at once
};

// Admin actions (loads, unloads) queued at most at once; more are RESOURCE_EXHAUSTED.
inline constexpr size_t kMaxQueuedAdminActions = 256;

using AdminServiceBase = v1::Admin::WithRawCallbackMethod_LoadAdapter<
    v1::Admin::WithRawCallbackMethod_UnloadAdapter<v1::Admin::WithRawCallbackMethod_ListAdapters<
        v1::Admin::WithRawCallbackMethod_GetServerInfo<
            v1::Admin::WithRawCallbackMethod_GetStats<v1::Admin::Service>>>>>;

class AdminService final : public AdminServiceBase {
 public:
  AdminService(ServingState* state, AdminOptions options)
      : state_(state),
        options_(std::move(options)),
        workers_(options_.load_threads, kMaxQueuedAdminActions) {}

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

  // A load or an unload from another transport (the HTTP adapter routes, http_adapter_admin.h):
  // the same checks and the same workers as LoadAdapter and UnloadAdapter (so actions on one task
  // still apply in the order they arrived), waited for on the caller's thread. The caller checks
  // the token; `peer` names the client in the log. Such a call has no deadline.
  Status load_now(const v1::LoadAdapterRequest& request, const std::string& peer,
                  v1::AdapterInfo* response);
  Status unload_now(const v1::UnloadAdapterRequest& request, const std::string& peer,
                    v1::UnloadAdapterResponse* response);

 private:
  // UNAUTHENTICATED without the token, then ready().
  Status check_access(const grpc::CallbackServerContext& context) const;
  // FAILED_PRECONDITION without an adapter root, UNAVAILABLE while the model loads.
  Status ready() const;
  // Checks a load's or an unload's request before it is queued.
  Status check_load(const v1::LoadAdapterRequest& request) const;
  Status check_unload(const v1::UnloadAdapterRequest& request) const;
  // ready() and check(request), then action(request, peer, call, response) on the workers; waits
  // for its status.
  template <typename Request, typename Response, typename Check, typename Action>
  Status run_now(const Request& request, const std::string& peer, Response* response,
                 const char* what, Check check, Action action);
  // A read-only call, answered inline: the access check, the request parsed, then
  // fill(response) when both pass.
  template <typename Request, typename Response, typename Fill>
  grpc::ServerUnaryReactor* answer(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request, grpc::ByteBuffer* response,
                                   Fill fill);
  // A load or unload: the access check, the request parsed and check(request) (a refusal is
  // logged), then action(request, peer, call, response) on the workers (keyed by the request's
  // task ID), whose status ends the call.
  template <typename Request, typename Response, typename Check, typename Action>
  grpc::ServerUnaryReactor* queue_action(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response, const char* what, Check check,
                                         Action action);
  Status load(const v1::LoadAdapterRequest& request, const std::string& peer, const AdminCall& call,
              v1::AdapterInfo* response);
  Status unload(const v1::UnloadAdapterRequest& request, const std::string& peer,
                v1::UnloadAdapterResponse* response);
  ServingState* state_;
  AdminOptions options_;
  KeyedExecutor workers_;  // loads and unloads, keyed by task ID
};

}  // namespace loraserve::server
