// AdminService: loraserve.v1.Admin, served on the admin address only. Every call first passes
// the bearer-token check (when a token is set) and needs an adapter root; the read-only calls
// then answer inline. Loads and unloads run on the service's own workers (KeyedExecutor, keyed
// by task ID): reading an adapter never holds a gRPC thread, actions on one task apply in the
// order they arrived, and a slow load holds up only its own task. A load whose client has given
// up (the call was cancelled or its deadline passed) before the new version is installed never
// takes effect: the registry checks under its lock, right before the swap. Every file a load
// reads must lie inside --adapter-root (common/untrusted_file.h). Thread-safe. `state` must
// outlive it; destroy it after the gRPC server that serves it has shut down.
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
  std::string version;       // loraserve's
  int32_t load_threads = 4;  // loads and unloads of different tasks that run at once
};

// Admin actions (loads, unloads) queued at most at once; more are RESOURCE_EXHAUSTED.
inline constexpr size_t kMaxQueuedAdminActions = 256;

class AdminService final : public v1::Admin::CallbackService {
 public:
  AdminService(ServingState* state, AdminOptions options)
      : state_(state),
        options_(std::move(options)),
        workers_(options_.load_threads, kMaxQueuedAdminActions) {}

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
  // A load or unload of `task_id`: the access check and the task ID's syntax (a refusal is
  // logged), then action(peer, call) on the workers, whose status ends the call.
  template <typename Action>
  grpc::ServerUnaryReactor* queue_action(grpc::CallbackServerContext* context, const char* what,
                                         const std::string& task_id, Action action);
  Status load(const v1::LoadAdapterRequest& request, const std::string& peer, const AdminCall& call,
              v1::AdapterInfo* response);
  Status unload(const v1::UnloadAdapterRequest& request, const std::string& peer,
                v1::UnloadAdapterResponse* response);
  ServingState* state_;
  AdminOptions options_;
  KeyedExecutor workers_;  // loads and unloads, keyed by task ID
};

}  // namespace loraserve::server
