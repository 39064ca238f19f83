#include "server/server_metrics.h"

#include <fmt/format.h>

#include <chrono>

#include "common/dtype.h"

namespace loraserve::server {
namespace {

using adapters::LoadTrigger;
using adapters::RegistryEvent;

// Bucket bounds in seconds: vLLM's, with finer steps below where a small model on a CPU lands.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kTpotBuckets = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
                                          0.1,   0.15,   0.2,   0.3,    0.4,  0.5,   0.75, 1.0,
                                          2.5,   5.0,    7.5,   10.0,   20.0, 40.0,  80.0};
const std::vector<double> kLatencyBuckets = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1,  0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,   5.0,
    10.0,  15.0,  20.0, 30.0,  40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const std::vector<double> kLoadBuckets = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
                                          0.5,   1.0,    2.5,   5.0,  10.0, 30.0, 60.0};

constexpr const char* kUnknownTask = "(unknown)";
constexpr const char* kOtherTasks = "(other)";

std::string_view trigger_name(LoadTrigger t) {
  return t == LoadTrigger::kOnDemand ? "on_demand" : "explicit";
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out.push_back(',');
    out += s;
  }
  return out;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

Result<std::unique_ptr<ServerMetrics>> ServerMetrics::create(const MetricsOptions& options) {
  if (options.max_tasks < 1)
    return invalid_argument_error("--metrics-max-tasks must be at least 1, got {}",
                                  options.max_tasks);
  std::unique_ptr<ServerMetrics> m(new ServerMetrics(options));
  LS_RETURN_IF_ERROR(m->register_families());
  std::lock_guard<std::mutex> lock(m->mu_);
  m->unknown_ = m->make_task(kUnknownTask);
  m->make_task("");  // the base model's series exist from the start
  return m;
}

Status ServerMetrics::register_families() {
  auto& r = registry_;
  const std::vector<std::string> task = {"task"};
  LS_ASSIGN_OR_RETURN(finished_,
                      r.counter("loraserve_requests_total",
                                "Requests the engine ended, by task and finish reason (length, "
                                "eos, stop, cancelled, deadline, error).",
                                {"task", "finish_reason"}));
  LS_ASSIGN_OR_RETURN(
      errors_, r.counter("loraserve_request_errors_total",
                         "Requests answered with an error, by task and canonical status code "
                         "(refused before the engine, failed, past their deadline, cancelled by "
                         "the client); task=\"(unknown)\" for tasks that are not served.",
                         {"task", "code"}));
  LS_ASSIGN_OR_RETURN(prompt_tokens_,
                      r.counter("loraserve_prompt_tokens_total",
                                "Prompt tokens of the requests the engine accepted.", task));
  LS_ASSIGN_OR_RETURN(generation_tokens_,
                      r.counter("loraserve_generation_tokens_total", "Tokens generated.", task));
  LS_ASSIGN_OR_RETURN(
      ttft_, r.histogram("loraserve_time_to_first_token_seconds",
                         "Arrival to first token, adapter load included.", task, kTtftBuckets));
  LS_ASSIGN_OR_RETURN(tpot_, r.histogram("loraserve_time_per_output_token_seconds",
                                         "A request's mean time per token after its first "
                                         "(requests of two tokens or more).",
                                         task, kTpotBuckets));
  LS_ASSIGN_OR_RETURN(e2e_,
                      r.histogram("loraserve_e2e_request_latency_seconds",
                                  "Arrival to the end of the request.", task, kLatencyBuckets));
  LS_ASSIGN_OR_RETURN(queue_, r.histogram("loraserve_request_queue_time_seconds",
                                          "Arrival to first scheduled step, adapter load "
                                          "included.",
                                          task, kLatencyBuckets));
  LS_ASSIGN_OR_RETURN(running_,
                      r.gauge("loraserve_num_requests_running", "Requests in the running batch."));
  LS_ASSIGN_OR_RETURN(waiting_, r.gauge("loraserve_num_requests_waiting",
                                        "Requests waiting: in the engine's queue or for their "
                                        "adapter to load."));
  LS_ASSIGN_OR_RETURN(loading_, r.gauge("loraserve_num_requests_loading_adapter",
                                        "Requests waiting for their adapter to load from disk."));
  LS_ASSIGN_OR_RETURN(preparing_bytes_,
                      r.gauge("loraserve_preparing_bytes",
                              "Request bytes being parsed, rendered and tokenized "
                              "(at most --max-preparing-bytes)."));
  LS_ASSIGN_OR_RETURN(preparing_waiting_,
                      r.gauge("loraserve_num_requests_waiting_to_prepare",
                              "Requests waiting for room in --max-preparing-bytes."));
  LS_ASSIGN_OR_RETURN(kv_used_,
                      r.gauge("loraserve_kv_cache_blocks_used", "KV-cache blocks in use."));
  LS_ASSIGN_OR_RETURN(kv_total_, r.gauge("loraserve_kv_cache_blocks_total", "KV-cache blocks."));
  LS_ASSIGN_OR_RETURN(kv_ratio_, r.gauge("loraserve_kv_cache_usage_ratio",
                                         "KV-cache blocks in use over all blocks (0 to 1)."));
  LS_ASSIGN_OR_RETURN(preemptions_,
                      r.counter("loraserve_preemptions_total",
                                "Sequences whose KV blocks were taken back, to be recomputed."));
  LS_ASSIGN_OR_RETURN(steps_, r.counter("loraserve_engine_steps_total", "Engine steps run."));
  LS_ASSIGN_OR_RETURN(adapters_loaded_,
                      r.gauge("loraserve_adapters_loaded",
                              "Adapters held: tier=\"device\" in device slots, tier=\"host\" "
                              "registered in host memory.",
                              {"tier"}));
  LS_ASSIGN_OR_RETURN(adapter_capacity_,
                      r.gauge("loraserve_adapter_capacity",
                              "Adapters each tier can hold (--max-device-adapters, "
                              "--max-host-adapters).",
                              {"tier"}));
  LS_ASSIGN_OR_RETURN(host_loads_,
                      r.counter("loraserve_adapter_host_loads_total",
                                "Adapters read from disk into host memory; trigger=\"on_demand\" "
                                "counts cold loads caused by a request.",
                                {"trigger"}));
  LS_ASSIGN_OR_RETURN(load_failures_,
                      r.counter("loraserve_adapter_load_failures_total",
                                "Adapter loads that failed (bad or missing files).", {"trigger"}));
  LS_ASSIGN_OR_RETURN(host_evictions_,
                      r.counter("loraserve_adapter_host_evictions_total",
                                "Adapters loaded on demand and evicted from host memory to make "
                                "room (least recently used, none with requests in flight)."));
  LS_ASSIGN_OR_RETURN(device_loads_, r.counter("loraserve_adapter_device_loads_total",
                                               "Placements of an adapter into a device slot."));
  LS_ASSIGN_OR_RETURN(device_evictions_,
                      r.counter("loraserve_adapter_device_evictions_total",
                                "Placements that displaced another adapter from its slot."));
  LS_ASSIGN_OR_RETURN(load_seconds_, r.histogram("loraserve_adapter_load_seconds",
                                                 "Time to read and validate an adapter from disk.",
                                                 {"trigger"}, kLoadBuckets));
  LS_ASSIGN_OR_RETURN(
      model_info_,
      r.gauge("loraserve_model_info",
              "Always 1; the labels name the model, the backend and the dtypes "
              "the backend keeps weights and activations in.",
              {"model", "architecture", "backend", "weight_dtype", "compute_dtype", "version"}));
  const std::vector<std::string> lora_labels = {"running_lora_adapters", "waiting_lora_adapters",
                                                "max_lora"};
  const char* lora_help =
      "Gateway API Inference Extension LoRA info: adapters with running and with waiting "
      "requests, and the device slots; the value is the Unix time the labels last changed.";
  LS_ASSIGN_OR_RETURN(lora_info_, r.gauge("loraserve_lora_requests_info", lora_help, lora_labels));
  LS_ASSIGN_OR_RETURN(vllm_running_, r.gauge("vllm:num_requests_running",
                                             "Same as loraserve_num_requests_running."));
  LS_ASSIGN_OR_RETURN(vllm_waiting_, r.gauge("vllm:num_requests_waiting",
                                             "Same as loraserve_num_requests_waiting."));
  LS_ASSIGN_OR_RETURN(vllm_gpu_cache_, r.gauge("vllm:gpu_cache_usage_perc",
                                               "Same as loraserve_kv_cache_usage_ratio (0 to 1)."));
  LS_ASSIGN_OR_RETURN(vllm_kv_cache_, r.gauge("vllm:kv_cache_usage_perc",
                                              "Same as loraserve_kv_cache_usage_ratio (0 to 1)."));
  LS_ASSIGN_OR_RETURN(
      vllm_lora_info_,
      r.gauge("vllm:lora_requests_info", "Same as loraserve_lora_requests_info.", lora_labels));
  LS_ASSIGN_OR_RETURN(vllm_cache_config_,
                      r.gauge("vllm:cache_config_info",
                              "Always 1; block_size is the KV-cache block size in tokens.",
                              {"block_size", "num_gpu_blocks"}));
  // Series without labels, and the per-label ones whose values are known, start at zero.
  for (auto* f : {running_, waiting_, loading_, kv_used_, kv_total_, kv_ratio_, vllm_running_,
                  vllm_waiting_, vllm_gpu_cache_, vllm_kv_cache_}) {
    f->get();
  }
  for (auto* f : {preemptions_, steps_, host_evictions_, device_loads_, device_evictions_})
    f->get();
  for (const char* tier : {"device", "host"}) {
    adapters_loaded_->with({tier});
    adapter_capacity_->with({tier});
  }
  for (LoadTrigger t : {LoadTrigger::kExplicit, LoadTrigger::kOnDemand}) {
    host_loads_->with({trigger_name(t)});
    load_failures_->with({trigger_name(t)});
    load_seconds_->with({trigger_name(t)});
  }
  return ok_status();
}

TaskMetrics* ServerMetrics::make_task(const std::string& label) {
  auto t = std::make_unique<TaskMetrics>();
  t->task_id = label;
  for (size_t i = 0; i < kFinishReasons.size(); ++i) {
    t->finished[i] = &finished_->with({label, engine::finish_reason_name(kFinishReasons[i])});
  }
  t->prompt_tokens = &prompt_tokens_->with({label});
  t->generation_tokens = &generation_tokens_->with({label});
  t->ttft = &ttft_->with({label});
  t->tpot = &tpot_->with({label});
  t->e2e = &e2e_->with({label});
  t->queue = &queue_->with({label});
  t->errors = errors_;
  TaskMetrics* p = t.get();
  tasks_.emplace(label, std::move(t));
  return p;
}

TaskMetrics& ServerMetrics::task(const std::string& task_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(task_id);
  if (it != tasks_.end()) return *it->second;
  // The base model, "(unknown)" and "(other)" do not count against the limit.
  const size_t reserved = 2 + (other_ != nullptr ? 1 : 0);
  if (tasks_.size() - reserved < static_cast<size_t>(options_.max_tasks))
    return *make_task(task_id);
  if (other_ == nullptr) other_ = make_task(kOtherTasks);
  return *other_;
}

void ServerMetrics::request_finished(TaskMetrics& t, const FinishedRequest& r) {
  for (size_t i = 0; i < kFinishReasons.size(); ++i) {
    if (kFinishReasons[i] == r.reason) t.finished[i]->inc();
  }
  t.e2e->observe(r.e2e_seconds);
  if (r.scheduled) t.queue->observe(r.queue_seconds);
  if (r.completion_tokens >= 1) t.ttft->observe(r.ttft_seconds);
  if (r.completion_tokens >= 2) {
    t.tpot->observe((r.e2e_seconds - r.ttft_seconds) / (r.completion_tokens - 1));
  }
}

void ServerMetrics::request_failed(TaskMetrics& t, StatusCode code) {
  t.errors->with({t.task_id, std::string(status_code_name(code))}).inc();
}

void ServerMetrics::adapter_event(const RegistryEvent& e) {
  const std::string trigger(trigger_name(e.trigger));
  switch (e.kind) {
    case RegistryEvent::Kind::kLoaded:
      host_loads_->with({trigger}).inc();
      load_seconds_->with({trigger}).observe(e.seconds);
      break;
    case RegistryEvent::Kind::kLoadFailed:
      load_failures_->with({trigger}).inc();
      break;
    case RegistryEvent::Kind::kEvicted:
      host_evictions_->get().inc();
      break;
    case RegistryEvent::Kind::kUnloaded:
      break;
  }
}

AdapterLoadTotals ServerMetrics::adapter_totals() const {
  AdapterLoadTotals t;
  t.host_loads = host_loads_->with({"explicit"}).value() + host_loads_->with({"on_demand"}).value();
  t.on_demand_loads = host_loads_->with({"on_demand"}).value();
  t.host_evictions = host_evictions_->get().value();
  t.load_failures =
      load_failures_->with({"explicit"}).value() + load_failures_->with({"on_demand"}).value();
  return t;
}

void ServerMetrics::set_model_info(const std::string& model, const engine::Engine& engine,
                                   const std::string& version) {
  const formats::ModelConfig& c = engine.config();
  const DType checkpoint = parse_dtype(c.torch_dtype).value_or(DType::kBF16);
  model_info_->replace_all({model, c.architecture_name, engine.backend().kind(),
                            std::string(dtype_name(engine.backend().weight_dtype(checkpoint))),
                            std::string(dtype_name(engine.backend().activation_dtype())), version},
                           1.0);
  std::lock_guard<std::mutex> lock(mu_);
  max_lora_ = engine.options().max_device_adapters;
  block_size_ = engine.options().block_size;
}

void ServerMetrics::set_lora_info(const ServerGauges& g) {
  std::lock_guard<std::mutex> lock(mu_);  // also orders concurrent scrapes' writes
  std::vector<std::string> labels = {join(g.running_tasks), join(g.waiting_tasks),
                                     std::to_string(max_lora_)};
  if (labels != lora_labels_ || lora_changed_at_ == 0.0) {
    lora_labels_ = labels;
    lora_changed_at_ = unix_now();
  }
  lora_info_->replace_all(labels, lora_changed_at_);
  vllm_lora_info_->replace_all(std::move(labels), lora_changed_at_);
}

std::string ServerMetrics::render(const engine::EngineStats* s, const ServerGauges& g) {
  if (s != nullptr) {
    const int32_t waiting = s->waiting + g.requests_loading_adapter;
    const int32_t kv_used = s->kv_blocks_total - s->kv_blocks_free;
    const double ratio =
        s->kv_blocks_total > 0 ? static_cast<double>(kv_used) / s->kv_blocks_total : 0.0;
    running_->get().set(s->running);
    waiting_->get().set(waiting);
    kv_used_->get().set(kv_used);
    kv_total_->get().set(s->kv_blocks_total);
    kv_ratio_->get().set(ratio);
    preemptions_->get().set(s->preemptions);
    steps_->get().set(s->steps);
    adapters_loaded_->with({"device"}).set(s->adapter_slots_used);
    adapter_capacity_->with({"device"}).set(s->adapter_slots_total);
    device_loads_->get().set(s->adapter_loads);
    device_evictions_->get().set(s->adapter_evictions);
    vllm_running_->get().set(s->running);
    vllm_waiting_->get().set(waiting);
    vllm_gpu_cache_->get().set(ratio);
    vllm_kv_cache_->get().set(ratio);
    int32_t block_size = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      block_size = block_size_;
    }
    vllm_cache_config_->replace_all(
        {std::to_string(block_size), std::to_string(s->kv_blocks_total)}, 1.0);
    set_lora_info(g);
  }
  loading_->get().set(g.requests_loading_adapter);
  preparing_bytes_->get().set(static_cast<double>(g.preparing_bytes));
  preparing_waiting_->get().set(static_cast<double>(g.requests_waiting_to_prepare));
  adapters_loaded_->with({"host"}).set(static_cast<double>(g.host_adapters));
  adapter_capacity_->with({"host"}).set(g.max_host_adapters);
  return registry_.render();
}

std::vector<TaskTotals> ServerMetrics::task_totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, std::map<std::string, uint64_t>> errors;
  for (const auto& labels : errors_->series()) {
    errors[labels[0]][labels[1]] = errors_->with({labels[0], labels[1]}).value();
  }
  std::vector<TaskTotals> out;
  for (const auto& [id, t] : tasks_) {
    TaskTotals tt;
    tt.task_id = id;
    for (size_t i = 0; i < kFinishReasons.size(); ++i) {
      const uint64_t n = t->finished[i]->value();
      tt.requests += n;
      if (n > 0) tt.finish_reasons[std::string(engine::finish_reason_name(kFinishReasons[i]))] = n;
    }
    tt.prompt_tokens = t->prompt_tokens->value();
    tt.completion_tokens = t->generation_tokens->value();
    tt.errors = errors[id];
    if (tt.requests == 0 && tt.errors.empty() && tt.prompt_tokens == 0) continue;
    out.push_back(std::move(tt));
  }
  return out;
}

}  // namespace loraserve::server
