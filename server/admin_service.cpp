#include "server/admin_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <future>
#include <memory>

#include "common/dtype.h"
#include "common/excerpt.h"
#include "engine/request.h"
#include "server/wire.h"

namespace loraserve::server {
namespace {

using Clock = std::chrono::steady_clock;

// The longest adapter path a LoadAdapter may name (Linux's PATH_MAX).
constexpr size_t kMaxPathBytes = PATH_MAX;

// Compares in time that depends on the lengths only, not on where the strings differ.
bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

void fill_info(const adapters::AdapterVersion& v, const engine::EngineStats& stats,
               const AdapterRoot& root, v1::AdapterInfo* out) {
  const adapters::LoraAdapter& a = *v.adapter;
  out->set_task_id(v.task_id);
  out->set_version(v.version);
  out->set_max_rank(static_cast<uint32_t>(a.max_rank()));
  out->set_min_rank(static_cast<uint32_t>(a.min_rank()));
  out->set_lora_alpha(a.lora_alpha());
  out->set_use_rslora(a.use_rslora());
  for (const auto& m : a.target_modules()) out->add_target_modules(m);
  out->set_bytes(a.bytes());
  out->set_dtype(std::string(dtype_name(a.dtype())));
  out->set_path(root.relative(v.source));
  out->set_residence(v1::RESIDENCE_HOST);
  out->set_device_slot(-1);
  for (const auto& [version, slot] : stats.adapter_slots) {
    if (version != v.version) continue;
    out->set_residence(v1::RESIDENCE_DEVICE_SLOT);
    out->set_device_slot(slot);
  }
  out->set_requests_served(v.requests_served.load());
  out->set_tokens_generated(v.tokens_generated.load());
  out->set_in_flight(v.in_flight.load());
  out->set_loaded_on_demand(v.trigger == adapters::LoadTrigger::kOnDemand);
  const auto since_epoch = v.loaded_at.time_since_epoch();
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  out->mutable_loaded_at()->set_seconds(secs.count());
  out->mutable_loaded_at()->set_nanos(static_cast<int32_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - secs).count()));
}

// The reactor of one load or unload: a cancellation (or passed deadline) reaches its AdminCall.
class AdminReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit AdminReactor(std::shared_ptr<AdminCall> call) : call_(std::move(call)) {}
  void OnCancel() override { call_->cancel(); }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<AdminCall> call_;
};

}  // namespace

Status AdminCall::still_wanted(std::string_view what) const {
  if (cancelled_.load()) {
    return cancelled_error(
        "the client cancelled the call before the {} completed; it was not "
        "applied",
        what);
  }
  if (std::chrono::system_clock::now() >= deadline_) {
    return deadline_exceeded_error(
        "the call's deadline passed before the {} completed; it was not applied", what);
  }
  return ok_status();
}

Status AdminService::check_access(const grpc::CallbackServerContext& context) const {
  if (!options_.token.empty()) {
    const auto& md = context.client_metadata();
    const auto it = md.find("authorization");
    if (it == md.end()) {
      return unauthenticated_error(
          "the Admin service needs the metadata 'authorization: Bearer <token>'");
    }
    const std::string_view value(it->second.data(), it->second.size());
    constexpr std::string_view kBearer = "Bearer ";
    if (!value.starts_with(kBearer) ||
        !constant_time_equal(value.substr(kBearer.size()), options_.token)) {
      return unauthenticated_error("the admin token in 'authorization' is wrong");
    }
  }
  return ready();
}

Status AdminService::ready() const {
  if (!options_.adapter_root) {
    return failed_precondition_error(
        "the Admin service is off: the server was started without --adapter-root, so adapter "
        "paths could not be confined");
  }
  if (state_->engine() == nullptr)
    return unavailable_error("the model is still loading; retry shortly");
  return ok_status();
}

template <typename Request, typename Response, typename Fill>
grpc::ServerUnaryReactor* AdminService::answer(grpc::CallbackServerContext* context,
                                               const grpc::ByteBuffer* request_bytes,
                                               grpc::ByteBuffer* response_bytes, Fill fill) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Status st = check_access(*context);
  Request request;
  if (st.ok()) st = parse_message(*request_bytes, &request);
  if (st.ok()) {
    Response response;
    fill(&response);
    st = serialize_message(response, response_bytes);
  }
  reactor->Finish(to_grpc(st));
  return reactor;
}

template <typename Request, typename Response, typename Check, typename Action>
grpc::ServerUnaryReactor* AdminService::queue_action(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request_bytes,
                                                     grpc::ByteBuffer* response_bytes,
                                                     const char* what, Check check, Action action) {
  auto call = std::make_shared<AdminCall>(context->deadline());
  auto* reactor = new AdminReactor(call);
  auto request = std::make_shared<Request>();
  Status st = check_access(*context);
  if (st.ok()) st = parse_message(*request_bytes, request.get());
  if (st.ok()) st = check(*request);
  if (st.ok()) {
    const std::string task_id = request->task_id();
    const bool queued = workers_.post(
        task_id, [reactor, request, response_bytes, action, call, peer = context->peer()] {
          Response response;
          Status result = action(*request, peer, *call, &response);
          if (result.ok()) result = serialize_message(response, response_bytes);
          reactor->Finish(to_grpc(result));
        });
    if (queued) return reactor;
    st = resource_exhausted_error("{} admin actions are queued already; retry later",
                                  kMaxQueuedAdminActions);
  }
  spdlog::warn("admin: {} refused, by {}: {}", what, context->peer(), st.to_string());
  reactor->Finish(to_grpc(st));
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::LoadAdapter(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  return queue_action<v1::LoadAdapterRequest, v1::AdapterInfo>(
      context, request, response, "load",
      [this](const v1::LoadAdapterRequest& r) { return check_load(r); },
      [this](const v1::LoadAdapterRequest& r, const std::string& peer, const AdminCall& call,
             v1::AdapterInfo* out) { return load(r, peer, call, out); });
}

Status AdminService::check_load(const v1::LoadAdapterRequest& r) const {
  LS_RETURN_IF_ERROR(state_->engine()->options().request_limits.check_task_id(r.task_id()));
  if (r.path().size() > kMaxPathBytes)
    return invalid_argument_error("path has {} bytes; at most {}", r.path().size(), kMaxPathBytes);
  return ok_status();
}

Status AdminService::check_unload(const v1::UnloadAdapterRequest& r) const {
  return state_->engine()->options().request_limits.check_task_id(r.task_id());
}

template <typename Request, typename Response, typename Check, typename Action>
Status AdminService::run_now(const Request& request, const std::string& peer, Response* response,
                             const char* what, Check check, Action action) {
  Status st = ready();
  if (st.ok()) st = check(request);
  if (!st.ok()) {
    spdlog::warn("admin: {} refused, by {}: {}", what, peer, st.to_string());
    return st;
  }
  // The job refers to this frame's objects: this thread waits for it below. The promise is the
  // job's, so that it outlives set_value.
  const AdminCall call(std::chrono::system_clock::time_point::max());
  auto done = std::make_shared<std::promise<Status>>();
  std::future<Status> result = done->get_future();
  const bool queued = workers_.post(
      request.task_id(), [&, done] { done->set_value(action(request, peer, call, response)); });
  if (!queued) {
    st = resource_exhausted_error("{} admin actions are queued already; retry later",
                                  kMaxQueuedAdminActions);
    spdlog::warn("admin: {} refused, by {}: {}", what, peer, st.to_string());
    return st;
  }
  return result.get();
}

Status AdminService::load_now(const v1::LoadAdapterRequest& request, const std::string& peer,
                              v1::AdapterInfo* response) {
  return run_now(
      request, peer, response, "load", [this](const auto& r) { return check_load(r); },
      [this](const v1::LoadAdapterRequest& r, const std::string& p, const AdminCall& call,
             v1::AdapterInfo* out) { return load(r, p, call, out); });
}

Status AdminService::unload_now(const v1::UnloadAdapterRequest& request, const std::string& peer,
                                v1::UnloadAdapterResponse* response) {
  return run_now(
      request, peer, response, "unload", [this](const auto& r) { return check_unload(r); },
      [this](const v1::UnloadAdapterRequest& r, const std::string& p, const AdminCall&,
             v1::UnloadAdapterResponse* out) { return unload(r, p, out); });
}

Status AdminService::load(const v1::LoadAdapterRequest& request, const std::string& peer,
                          const AdminCall& call, v1::AdapterInfo* response) {
  const auto t0 = Clock::now();
  Status st = [&]() -> Status {
    if (state_->draining()) return unavailable_error("the server is shutting down");
    // Waiting for its turn may have outlasted the client.
    LS_RETURN_IF_ERROR(call.still_wanted("load"));
    LS_ASSIGN_OR_RETURN(const std::string dir, options_.adapter_root->resolve(request.path()));
    engine::Engine& e = *state_->engine();
    adapters::LoadOptions load;
    load.replace = request.replace();
    load.root = options_.adapter_root->path();
    load.still_wanted = [&call] { return call.still_wanted("load"); };
    LS_ASSIGN_OR_RETURN(auto version, e.adapters().load(request.task_id(), dir, load));
    fill_info(*version, e.stats(), *options_.adapter_root, response);
    return ok_status();
  }();
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (st.ok()) {
    spdlog::info("admin: {} task {} version {} from '{}' (rank {}, {} bytes) in {:.1f} ms, by {}",
                 request.replace() ? "replaced" : "loaded", request.task_id(), response->version(),
                 response->path(), response->max_rank(), response->bytes(), ms, peer);
  } else {
    spdlog::warn("admin: load of task {} from {} failed, by {}: {}", request.task_id(),
                 excerpt(request.path(), kPathExcerptBytes), peer, st.to_string());
  }
  return st;
}

grpc::ServerUnaryReactor* AdminService::UnloadAdapter(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  return queue_action<v1::UnloadAdapterRequest, v1::UnloadAdapterResponse>(
      context, request, response, "unload",
      [this](const v1::UnloadAdapterRequest& r) { return check_unload(r); },
      [this](const v1::UnloadAdapterRequest& r, const std::string& peer, const AdminCall&,
             v1::UnloadAdapterResponse* out) { return unload(r, peer, out); });
}

Status AdminService::unload(const v1::UnloadAdapterRequest& request, const std::string& peer,
                            v1::UnloadAdapterResponse* response) {
  Status st = [&]() -> Status {
    if (state_->draining()) return unavailable_error("the server is shutting down");
    auto& registry = state_->engine()->adapters();
    const adapters::AdapterRef current = registry.find(request.task_id());
    if (!current) {
      return not_found_error("unknown task '{}': no adapter is loaded under that task ID",
                             request.task_id());
    }
    LS_RETURN_IF_ERROR(registry.unload(request.task_id()));
    response->set_version(current->version);
    return ok_status();
  }();
  if (st.ok()) {
    spdlog::info("admin: unloaded task {} version {}, by {}", request.task_id(),
                 response->version(), peer);
  } else {
    spdlog::warn("admin: unload of task '{}' failed, by {}: {}", request.task_id(), peer,
                 st.to_string());
  }
  return st;
}

grpc::ServerUnaryReactor* AdminService::ListAdapters(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response_bytes) {
  return answer<v1::ListAdaptersRequest, v1::ListAdaptersResponse>(
      context, request, response_bytes, [&](v1::ListAdaptersResponse* response) {
        engine::Engine& e = *state_->engine();
        auto versions = e.adapters().list();
        std::sort(versions.begin(), versions.end(),
                  [](const auto& a, const auto& b) { return a->task_id < b->task_id; });
        const engine::EngineStats stats = e.stats();
        for (const auto& v : versions)
          fill_info(*v, stats, *options_.adapter_root, response->add_adapters());
      });
}

grpc::ServerUnaryReactor* AdminService::GetServerInfo(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response_bytes) {
  return answer<v1::GetServerInfoRequest, v1::GetServerInfoResponse>(
      context, request, response_bytes, [&](v1::GetServerInfoResponse* response) {
        const engine::Engine& e = *state_->engine();
        const formats::ModelConfig& c = e.config();
        const engine::EngineOptions& o = e.options();
        response->set_model(options_.model_dir);
        response->set_architecture(c.architecture_name);
        response->set_backend(e.backend().kind());
        response->set_device(e.backend().describe());
        response->set_weight_dtype(std::string(dtype_name(e.weight_dtype())));
        response->set_compute_dtype(std::string(dtype_name(e.backend().activation_dtype())));
        response->set_vocab_size(static_cast<uint32_t>(c.vocab_size));
        response->set_num_layers(static_cast<uint32_t>(c.num_layers));
        response->set_hidden_size(static_cast<uint32_t>(c.hidden_size));
        response->set_has_tokenizer(e.tokenizer() != nullptr);
        response->set_version(options_.version);
        v1::Limits* l = response->mutable_limits();
        l->set_max_batch_size(static_cast<uint32_t>(o.max_batch_size));
        l->set_max_batched_tokens(static_cast<uint32_t>(o.max_batched_tokens));
        l->set_max_queue(static_cast<uint32_t>(o.max_queue));
        l->set_max_context(static_cast<uint32_t>(c.max_context));
        l->set_default_max_tokens(static_cast<uint32_t>(o.default_max_tokens));
        l->set_kv_block_size(static_cast<uint32_t>(o.block_size));
        l->set_kv_blocks(static_cast<uint32_t>(e.stats().kv_blocks_total));
        l->set_max_lora_rank(static_cast<uint32_t>(o.max_lora_rank));
        l->set_max_device_adapters(static_cast<uint32_t>(o.max_device_adapters));
        l->set_max_host_adapters(static_cast<uint32_t>(o.max_host_adapters));
        const engine::RequestLimits& r = o.request_limits;
        l->set_max_logprobs(static_cast<uint32_t>(r.max_logprobs));
        l->set_max_request_bytes(static_cast<uint32_t>(options_.max_request_bytes));
        l->set_max_concurrent_streams(static_cast<uint32_t>(options_.max_concurrent_streams));
        l->set_max_prompt_tokens(static_cast<uint32_t>(r.max_prompt_tokens));
        l->set_max_stop_strings(static_cast<uint32_t>(r.max_stop_strings));
        l->set_max_stop_bytes(static_cast<uint32_t>(r.max_stop_bytes));
        l->set_max_stop_token_ids(static_cast<uint32_t>(r.max_stop_token_ids));
        l->set_max_task_id_length(static_cast<uint32_t>(r.max_task_id_length));
        l->set_max_request_id_bytes(static_cast<uint32_t>(r.max_request_id_bytes));
        l->set_load_on_demand(state_->loader()->on_demand());
      });
}

grpc::ServerUnaryReactor* AdminService::GetStats(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response_bytes) {
  return answer<v1::GetStatsRequest, v1::GetStatsResponse>(
      context, request, response_bytes, [&](v1::GetStatsResponse* response) {
        const engine::EngineStats s = state_->engine()->stats();
        response->set_kv_blocks_used(static_cast<uint32_t>(s.kv_blocks_total - s.kv_blocks_free));
        response->set_kv_blocks_free(static_cast<uint32_t>(s.kv_blocks_free));
        response->set_requests_running(static_cast<uint32_t>(s.running));
        response->set_requests_queued(static_cast<uint32_t>(s.waiting));
        for (const auto& [task, n] : s.waiting_for_adapter) {
          v1::TaskWaiting* w = response->add_waiting_for_adapter();
          w->set_task_id(task);
          w->set_requests(static_cast<uint32_t>(n));
        }
        response->set_adapter_slots_used(static_cast<uint32_t>(s.adapter_slots_used));
        response->set_adapter_slots_free(
            static_cast<uint32_t>(s.adapter_slots_total - s.adapter_slots_used));
        response->set_adapter_loads(s.adapter_loads);
        response->set_adapter_evictions(s.adapter_evictions);
        response->set_preemptions(s.preemptions);
        response->set_steps(s.steps);
        response->set_prompt_tokens(s.prompt_tokens);
        response->set_tokens_generated(s.tokens_generated);
        response->set_requests_finished(s.requests_finished);
        const ServerGauges g = state_->gauges(&s);
        const AdapterLoadTotals loads = state_->metrics()->adapter_totals();
        response->set_adapters_on_host(static_cast<uint32_t>(g.host_adapters));
        response->set_host_adapter_loads(loads.host_loads);
        response->set_on_demand_loads(loads.on_demand_loads);
        response->set_host_adapter_evictions(loads.host_evictions);
        response->set_adapter_load_failures(loads.load_failures);
        response->set_requests_loading_adapter(static_cast<uint32_t>(g.requests_loading_adapter));
        for (const auto& t : g.running_tasks) response->add_running_lora_adapters(t);
        for (const auto& t : g.waiting_tasks) response->add_waiting_lora_adapters(t);
        for (const TaskTotals& t : state_->metrics()->task_totals()) {
          v1::TaskCounters* c = response->add_tasks();
          c->set_task_id(t.task_id);
          c->set_requests(t.requests);
          c->set_prompt_tokens(t.prompt_tokens);
          c->set_completion_tokens(t.completion_tokens);
          for (const auto& [reason, n] : t.finish_reasons)
            (*c->mutable_finish_reasons())[reason] = n;
          for (const auto& [code, n] : t.errors) (*c->mutable_errors())[code] = n;
        }
      });
}

}  // namespace loraserve::server
