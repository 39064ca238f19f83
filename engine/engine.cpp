#include "engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "engine/delivery.h"
#include "engine/memory_plan.h"
#include "engine/stop_conditions.h"

namespace loraserve::engine {

using Clock = Sequence::Clock;

std::string_view finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kDeadline:
      return "deadline";
    case FinishReason::kError:
      return "error";
  }
  return "none";
}

Result<std::unique_ptr<Engine>> Engine::create(const formats::ModelConfig& config,
                                               WeightSource& weights,
                                               std::unique_ptr<kernels::Backend> backend,
                                               const EngineOptions& options,
                                               std::unique_ptr<tokenizer::Tokenizer> tokenizer) {
  if (options.max_batch_size <= 0 || options.max_batched_tokens <= 0 || options.block_size <= 0) {
    return invalid_argument_error(
        "max_batch_size, max_batched_tokens and block_size must be positive");
  }
  if (options.max_batched_tokens < options.max_batch_size) {
    return invalid_argument_error(
        "max_batched_tokens ({}) must be at least max_batch_size ({}): every running "
        "sequence needs one row per step",
        options.max_batched_tokens, options.max_batch_size);
  }
  LS_RETURN_IF_ERROR(options.request_limits.validate());
  if (options.max_queue <= 0 || options.max_queue_per_task < 0) {
    return invalid_argument_error(
        "max_queue must be positive and max_queue_per_task at least 0 (0: no per-task limit)");
  }
  LS_RETURN_IF_ERROR(validate_fairness_options(options.fairness));
  ForwardOptions fo;
  fo.max_rows = options.max_batched_tokens;
  fo.max_logits_rows = options.max_batch_size;
  fo.max_lora_rank = options.max_lora_rank;

  MemoryPlanInput mi;
  mi.device = backend->describe();
  mi.available = backend->available_memory();
  mi.headroom = backend->memory_headroom();
  mi.weight_dtype = backend->weight_dtype(checkpoint_dtype(config, weights));
  mi.weight_bytes = estimate_weight_bytes(config, mi.weight_dtype);
  mi.activation_bytes = Model::activation_bytes(config, fo, backend->activation_dtype());
  mi.kv_block_bytes =
      KvCache::bytes_per_block(config, options.block_size, backend->activation_dtype());
  mi.block_size = options.block_size;
  mi.max_context = config.max_context;
  mi.max_batch_size = options.max_batch_size;
  mi.kv_cache_bytes = options.kv_cache_bytes;
  LS_ASSIGN_OR_RETURN(const MemoryPlan plan, plan_memory(mi));
  spdlog::info("{}", plan.describe(mi));

  std::unique_ptr<Engine> engine(new Engine(std::move(backend), options));
  Engine* e = engine.get();
  kernels::Backend* b = e->backend_.get();
  LS_ASSIGN_OR_RETURN(e->model_, Model::load(config, weights, b, fo));
  LS_ASSIGN_OR_RETURN(e->cache_, KvCache::create(config, b, plan.kv_blocks, options.block_size));
  adapters::RegistryOptions ro;
  ro.max_adapters = options.max_host_adapters;
  ro.max_rank = options.max_lora_rank;
  e->registry_ = std::make_unique<adapters::AdapterRegistry>(config, b, ro);
  e->adapter_cache_ =
      std::make_unique<adapters::AdapterCache>(b, config, options.max_device_adapters);
  e->tokenizer_ = std::move(tokenizer);

  AdmissionLimits& l = e->limits_;
  l.request = options.request_limits;
  l.vocab_size = static_cast<int32_t>(config.vocab_size);
  l.max_context = config.max_context;
  l.default_max_tokens = options.default_max_tokens;
  l.has_tokenizer = e->tokenizer_ != nullptr;
  l.kv_blocks = e->cache_->num_blocks();
  l.kv_block_size = e->cache_->block_size();

  BlockAllocator* kv = &e->cache_->blocks();
  e->admission_ = std::make_unique<Admission>(kv, options.fairness,
                                              [e](Sequence* seq) { return e->adapter_ready(seq); });
  SchedulerOptions so;
  so.max_batch_size = options.max_batch_size;
  so.max_batched_tokens = options.max_batched_tokens;
  e->scheduler_ = std::make_unique<Scheduler>(so, kv, e->admission_.get());
  adapters::AdapterCache* slots = e->adapter_cache_.get();
  e->step_builder_ = std::make_unique<StepBuilder>(
      options.block_size, adapters::num_lora_tables(config),
      [slots](int32_t slot, int32_t table) -> const kernels::LoraSlice& {
        return slots->slice(slot, table);
      });
  e->sampler_ = std::make_unique<Sampler>(b);
  e->counters_.kv_blocks_total = e->cache_->num_blocks();
  e->publish_stats();
  return engine;
}

Engine::~Engine() = default;

Result<uint64_t> Engine::submit(GenerationRequest request) {
  LS_ASSIGN_OR_RETURN(const int32_t max_tokens, validate_request(request, limits_));
  LS_RETURN_IF_ERROR(queue_.reserve(request.task_id));
  auto adapter = hold_adapter(*registry_, request);
  if (!adapter.ok()) {
    queue_.release(request.task_id);
    return adapter.status();
  }
  auto seq = std::make_unique<Sequence>();
  seq->id = next_id_.fetch_add(1);
  seq->max_tokens = max_tokens;
  seq->tokens = request.prompt_token_ids;
  seq->prompt_len = static_cast<int32_t>(seq->tokens.size());
  seq->rng.seed(request.params.seed ? *request.params.seed : std::random_device{}());
  seq->submitted_at = Clock::now();
  seq->adapter = std::move(*adapter);
  if (tokenizer_) {
    seq->detokenizer = std::make_unique<tokenizer::IncrementalDecoder>(
        *tokenizer_, request.params.skip_special_tokens);
    seq->stop_strings = StopStringMatcher(request.params.stop);
  }
  seq->request = std::move(request);
  const uint64_t id = seq->id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox_.push_back(std::move(seq));
  }
  cv_.notify_all();
  return id;
}

void Engine::cancel(uint64_t sequence_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(sequence_id);
  }
  cv_.notify_all();
}

bool Engine::has_work() const {
  if (!live_.empty()) return true;
  std::lock_guard<std::mutex> lock(mu_);
  return !inbox_.empty() || !cancels_.empty();
}

void Engine::drain_inbox() {
  std::vector<std::unique_ptr<Sequence>> inbox;
  std::vector<uint64_t> cancels;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox.swap(inbox_);
    cancels.swap(cancels_);
  }
  for (auto& s : inbox) {
    scheduler_->add(s.get());
    counters_.prompt_tokens += static_cast<uint64_t>(s->prompt_len);
    live_.emplace(s->id, std::move(s));
  }
  const auto now = Clock::now();
  for (uint64_t id : cancels) {
    auto it = live_.find(id);
    if (it == live_.end()) continue;
    // gRPC cancels a call whose deadline passed: that request ended by its deadline.
    const auto& deadline = it->second->request.deadline;
    const bool expired = deadline && *deadline <= now + kDeadlineSlack;
    SequenceUpdate u;
    finish(it->second.get(), expired ? FinishReason::kDeadline : FinishReason::kCancelled,
           ok_status(), &u);
  }
  std::vector<Sequence*> expired;
  for (auto& [id, s] : live_) {
    if (s->request.deadline && *s->request.deadline <= now) expired.push_back(s.get());
  }
  for (Sequence* s : expired) {
    SequenceUpdate u;
    finish(s, FinishReason::kDeadline, ok_status(), &u);
  }
}

bool Engine::adapter_ready(Sequence* seq) {
  if (!seq->adapter) return true;
  if (seq->slot < 0) {
    auto slot = adapter_cache_->acquire(seq->adapter.ref());
    if (!slot) return false;  // every slot is pinned by running requests: wait
    seq->slot = *slot;
  }
  if (adapter_cache_->ready(seq->slot)) return true;
  if (!adapter_cache_->failure(seq->slot).ok() &&
      std::find(upload_failed_.begin(), upload_failed_.end(), seq) == upload_failed_.end()) {
    upload_failed_.push_back(seq);
  }
  return false;
}

void Engine::finish_failed_uploads() {
  std::vector<Sequence*> failed;
  failed.swap(upload_failed_);
  for (Sequence* s : failed) {
    SequenceUpdate u;
    finish(s, FinishReason::kError, adapter_cache_->failure(s->slot), &u);
  }
}

Status Engine::step() {
  // 1. Submissions, cancellations and deadlines.
  drain_inbox();
  // 2. Admission and planning: which rows run.
  StepPlan plan = scheduler_->plan();
  finish_failed_uploads();
  counters_.preemptions += plan.preempted.size();
  for (const Sequence* s : plan.preempted) {
    spdlog::debug("preempted sequence {} ({} tokens) to free KV blocks; it will be recomputed",
                  s->id, s->tokens.size());
  }
  if (plan.chunks.empty()) {
    end_step();
    return ok_status();
  }
  const auto now = Clock::now();
  for (const ScheduledChunk& ch : plan.chunks) {
    Sequence* s = ch.seq;
    if (s->first_scheduled_at) continue;
    s->first_scheduled_at = now;
    // Made here rather than at submission: a repetition penalty holds an entry per distinct
    // prompt token, which only the sequences that run need, not the thousand that may wait.
    s->logit_edits = LogitEdits::make(
        s->request.params, std::span(s->tokens).first(static_cast<size_t>(s->prompt_len)),
        model_->config().eos_token_ids);
  }
  // 3. Step building: rows, block tables, LoRA segments.
  const std::vector<const ScheduledChunk*> sampling = step_builder_->build(&plan.chunks, &meta_);
  // 4. The forward.
  auto logits = model_->forward(meta_, *cache_);
  if (!logits.ok()) return fail_step(plan, logits.status());
  // 5. Sampling.
  std::vector<Sequence*> rows(sampling.size());
  for (size_t k = 0; k < sampling.size(); ++k) rows[k] = sampling[k]->seq;
  Status sampled = sampler_->sample(*logits, rows);
  if (!sampled.ok()) return fail_step(plan, sampled);
  ++counters_.steps;
  for (const ScheduledChunk& ch : plan.chunks) ch.seq->num_computed += ch.num_tokens;
  // 6, 7. Stop conditions and delivery.
  const auto done = Clock::now();
  for (size_t k = 0; k < rows.size(); ++k) complete_row(rows[k], k, done);
  end_step();
  return ok_status();
}

void Engine::complete_row(Sequence* s, size_t k, Clock::time_point now) {
  const kernels::SampleResult& r = sampler_->results()[k];
  if (!std::isfinite(r.logprob)) {
    // A NaN or infinite logit: what the weights computed for this row overflowed (an adapter's
    // huge values, say). Its token would mean nothing; the other rows of the step are unharmed.
    SequenceUpdate u;
    const std::string& task = s->request.task_id;
    finish(s, FinishReason::kError,
           internal_error("the model's output for this request is not finite (NaN or infinite "
                          "logits) after {} generated tokens{}: the weights{} overflow on it",
                          s->num_generated(), task.empty() ? "" : " of task '" + task + "'",
                          task.empty() ? "" : " or the task's adapter"),
           &u);
    return;
  }
  s->tokens.push_back(r.token_id);
  if (s->logit_edits) s->logit_edits->add_output_token(r.token_id);
  admission_->served_token(*s);
  if (!s->first_token_at) s->first_token_at = now;
  ++counters_.tokens_generated;
  SequenceUpdate u;
  u.new_tokens.push_back({r.token_id, r.logprob, r.top});
  if (s->request.return_logits) u.logits.push_back(std::move(sampler_->logits(k)));
  const formats::ModelConfig& c = model_->config();
  FinishReason reason = token_stop_reason(*s, r.token_id, c.eos_token_ids, c.max_context);
  s->ended_by_token = reason == FinishReason::kEos || reason == FinishReason::kStop;
  if (s->detokenizer && reason == FinishReason::kNone) {
    auto text = stream_text(*s, &u, /*finishing=*/false);
    if (!text.ok()) {
      finish(s, FinishReason::kError, text.status(), &u);
      return;
    }
    reason = *text;
  }
  if (reason != FinishReason::kNone) {
    finish(s, reason, ok_status(), &u);
  } else {
    deliver(*s, u);
  }
}

void Engine::finish(Sequence* s, FinishReason reason, Status error, SequenceUpdate* u) {
  scheduler_->remove(s);
  if (s->slot >= 0) adapter_cache_->release(s->slot);
  if (s->adapter) {  // its hold ends with `s`
    s->adapter->requests_served.fetch_add(1);
    s->adapter->tokens_generated.fetch_add(static_cast<uint64_t>(std::max(0, s->num_generated())));
  }
  deliver_finish(*s, reason, std::move(error), u);
  ++counters_.requests_finished;
  queue_.release(s->request.task_id);
  live_.erase(s->id);  // destroys s
}

Status Engine::fail_step(const StepPlan& plan, const Status& error) {
  spdlog::error("step failed: {}", error.to_string());
  for (const ScheduledChunk& ch : plan.chunks) {
    SequenceUpdate u;
    finish(ch.seq, FinishReason::kError, error, &u);
  }
  end_step();
  return error;
}

void Engine::end_step() {
  adapter_cache_->sweep();
  publish_stats();
}

Status Engine::run_until_idle() {
  while (has_work()) {
    const uint64_t before = progress_mark();
    LS_RETURN_IF_ERROR(step());
    if (progress_mark() == before && !live_.empty()) {
      // On a device backend the only runnable sequences may be waiting for their adapter's
      // upload, which lands on its own: wait for it rather than call that a stall.
      if (adapter_cache_->uploads_in_flight()) {
        wait_for_uploads();
        continue;
      }
      return internal_error("engine made no progress with {} sequences waiting", live_.size());
    }
  }
  return ok_status();
}

uint64_t Engine::progress_mark() const {
  // An upload seen to land during a step that ran nothing counts: the next step can admit its
  // requests (it may be seen only by the stats' poll at the end of the step).
  return counters_.steps + counters_.requests_finished + adapter_cache_->counters().landed;
}

void Engine::wait_for_uploads() {
  // An upload of a rank-16 8B-shaped adapter takes about 1.5 ms on an H200; polling every 50 us
  // adds little to that and keeps the engine thread from spinning on a core.
  std::this_thread::sleep_for(std::chrono::microseconds(50));
}

Status Engine::run_loop(std::stop_token stop) {
  while (!stop.stop_requested()) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, stop, [&] { return !inbox_.empty() || !cancels_.empty() || !live_.empty(); });
    }
    if (stop.stop_requested()) break;
    const uint64_t before = progress_mark();
    Status st = step();
    if (!st.ok()) spdlog::error("engine step: {}", st.to_string());
    if (progress_mark() == before && adapter_cache_->uploads_in_flight()) {
      wait_for_uploads();
    }
  }
  return ok_status();
}

void Engine::publish_stats() {
  EngineStats& c = counters_;
  c.adapter_slots_total = adapter_cache_->num_slots();
  c.adapter_slots_used = adapter_cache_->slots_used();
  c.adapter_loads = adapter_cache_->counters().loads;
  c.adapter_evictions = adapter_cache_->counters().evictions;
  c.waiting_for_adapter.clear();
  for (const Sequence* s : admission_->waiting()) {
    if (!s->adapter || (s->slot >= 0 && adapter_cache_->ready(s->slot))) continue;
    auto& w = c.waiting_for_adapter;
    auto it = std::find_if(w.begin(), w.end(),
                           [&](const auto& p) { return p.first == s->adapter->task_id; });
    if (it == w.end()) {
      w.emplace_back(s->adapter->task_id, 1);
    } else {
      ++it->second;
    }
  }
  // Tasks with requests running, and waiting to be admitted (the LoRA info metric).
  c.running_tasks.clear();
  c.waiting_tasks.clear();
  for (const Sequence* s : scheduler_->running())
    if (s->adapter) c.running_tasks.push_back(s->adapter->task_id);
  for (const Sequence* s : admission_->waiting())
    if (s->adapter) c.waiting_tasks.push_back(s->adapter->task_id);
  for (auto* tasks : {&c.running_tasks, &c.waiting_tasks}) {
    std::sort(tasks->begin(), tasks->end());
    tasks->erase(std::unique(tasks->begin(), tasks->end()), tasks->end());
  }
  c.adapter_slots.clear();
  for (const auto& info : adapter_cache_->snapshot())
    c.adapter_slots.emplace_back(info.version, info.slot);
  c.running = static_cast<int32_t>(scheduler_->num_running());
  c.waiting = static_cast<int32_t>(admission_->num_waiting());
  c.kv_blocks_free = cache_->blocks().num_free();
  std::lock_guard<std::mutex> lock(mu_);
  published_ = c;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return published_;
}

}  // namespace loraserve::engine
