#include "engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

namespace loraserve::engine {
namespace {

using Clock = std::chrono::steady_clock;

double millis(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double gib(double bytes) { return bytes / static_cast<double>(1ull << 30); }

}  // namespace

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
  const DType wdt = backend->weight_dtype(parse_dtype(config.torch_dtype).value_or(DType::kBF16));
  const DType adt = backend->activation_dtype();
  const double weight_bytes =
      static_cast<double>(kernels::weight_storage_bytes(wdt, 1, config.parameter_count()));
  const double row_width =
      static_cast<double>(3 * config.hidden_size + 2 * config.q_dim() + 2 * config.kv_dim() +
                          3 * config.intermediate_size + 3 * options.max_lora_rank);
  const double scratch = (row_width * options.max_batched_tokens +
                          static_cast<double>(options.max_batch_size) *
                              static_cast<double>(config.vocab_size + config.hidden_size)) *
                         static_cast<double>(dtype_size(adt));
  const size_t per_block = KvCache::bytes_per_block(config, options.block_size, adt);
  const int64_t blocks_per_context =
      (config.max_context + options.block_size - 1) / options.block_size;
  const double available = static_cast<double>(backend->available_memory());
  const double usable = available * (backend->kind() == "cpu" ? 0.85 : 0.92);
  const double min_kv = static_cast<double>(per_block) * static_cast<double>(blocks_per_context);
  double kv_bytes = static_cast<double>(options.kv_cache_bytes);
  if (kv_bytes <= 0) {
    const double want = min_kv * options.max_batch_size;
    const double room = (usable - weight_bytes - scratch) * (backend->kind() == "cpu" ? 0.5 : 0.9);
    kv_bytes = std::max(std::min(want, room), std::min(min_kv, want));
  }
  const int64_t num_blocks = static_cast<int64_t>(kv_bytes / static_cast<double>(per_block));
  if (num_blocks < 1)
    return invalid_argument_error("KV cache budget {} bytes holds no block of {} bytes", kv_bytes,
                                  per_block);
  const double need =
      weight_bytes + scratch + static_cast<double>(num_blocks) * static_cast<double>(per_block);
  if (need > usable) {
    return resource_exhausted_error(
        "not enough memory on {}: the model needs {:.2f} GiB of weights in {} plus {:.2f} GiB of "
        "KV cache "
        "and {:.2f} GiB of activations, but only {:.2f} GiB are available (use a smaller "
        "--kv-cache-memory "
        "or --max-batched-tokens, or a machine with more memory)",
        backend->describe(), gib(weight_bytes), dtype_name(wdt),
        gib(static_cast<double>(num_blocks * per_block)), gib(scratch), gib(available));
  }
  if (num_blocks > std::numeric_limits<int32_t>::max())
    return invalid_argument_error("KV cache too large");
  spdlog::info(
      "memory plan on {}: weights {:.2f} GiB ({}), KV cache {:.2f} GiB ({} blocks of {} tokens, "
      "{:.1f} full contexts of {}), activations {:.2f} GiB; {:.2f} GiB available",
      backend->describe(), gib(weight_bytes), dtype_name(wdt),
      gib(static_cast<double>(num_blocks * per_block)), num_blocks, options.block_size,
      static_cast<double>(num_blocks) / static_cast<double>(blocks_per_context), config.max_context,
      gib(scratch), gib(available));

  std::unique_ptr<Engine> engine(new Engine(std::move(backend), options));
  ForwardOptions fo;
  fo.max_rows = options.max_batched_tokens;
  fo.max_logits_rows = options.max_batch_size;
  fo.max_lora_rank = options.max_lora_rank;
  LS_ASSIGN_OR_RETURN(engine->model_, Model::load(config, weights, engine->backend_.get(), fo));
  LS_ASSIGN_OR_RETURN(engine->cache_,
                      KvCache::create(config, engine->backend_.get(),
                                      static_cast<int32_t>(num_blocks), options.block_size));
  SchedulerOptions so;
  so.max_batch_size = options.max_batch_size;
  so.max_batched_tokens = options.max_batched_tokens;
  adapters::RegistryOptions ro;
  ro.max_adapters = options.max_host_adapters;
  ro.max_rank = options.max_lora_rank;
  engine->registry_ =
      std::make_unique<adapters::AdapterRegistry>(config, engine->backend_.get(), ro);
  engine->adapter_cache_ = std::make_unique<adapters::AdapterCache>(engine->backend_.get(), config,
                                                                    options.max_device_adapters);
  Engine* e = engine.get();
  engine->scheduler_ = std::make_unique<Scheduler>(
      so, engine->cache_.get(), [e](Sequence* seq) { return e->adapter_ready(seq); });
  engine->tokenizer_ = std::move(tokenizer);
  engine->counters_.kv_blocks_total = engine->cache_->num_blocks();
  engine->publish_stats();
  return engine;
}

Engine::~Engine() = default;

Status Engine::validate_request(const GenerationRequest& r, int32_t* max_tokens) const {
  const auto& c = model_->config();
  const auto& p = r.params;
  if (r.prompt_token_ids.empty()) return invalid_argument_error("prompt is empty");
  for (size_t i = 0; i < r.prompt_token_ids.size(); ++i) {
    const int32_t id = r.prompt_token_ids[i];
    if (id < 0 || id >= c.vocab_size) {
      return invalid_argument_error(
          "prompt token id {} (at index {}) is outside the vocabulary [0, {})", id, i,
          c.vocab_size);
    }
  }
  const int64_t prompt_len = static_cast<int64_t>(r.prompt_token_ids.size());
  if (prompt_len >= c.max_context) {
    return invalid_argument_error(
        "prompt has {} tokens; the model's context holds {} (prompt and output together)",
        prompt_len, c.max_context);
  }
  if (p.max_tokens) {
    if (*p.max_tokens < 1)
      return invalid_argument_error("max_tokens must be at least 1, got {}", *p.max_tokens);
    if (prompt_len + *p.max_tokens > c.max_context) {
      return invalid_argument_error(
          "max_tokens {} runs past the context: prompt {} + max_tokens {} > {}", *p.max_tokens,
          prompt_len, *p.max_tokens, c.max_context);
    }
    *max_tokens = *p.max_tokens;
  } else {
    *max_tokens = static_cast<int32_t>(
        std::min<int64_t>(options_.default_max_tokens, c.max_context - prompt_len));
  }
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return invalid_argument_error("temperature must be a finite number >= 0, got {}",
                                  p.temperature);
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return invalid_argument_error("top_p must be in (0, 1], got {}", p.top_p);
  if (p.top_k < 0)
    return invalid_argument_error("top_k must be >= 0 (0 turns it off), got {}", p.top_k);
  if (p.logprobs < 0 || p.logprobs > kMaxLogprobs) {
    return invalid_argument_error("logprobs must be in [0, {}], got {}", kMaxLogprobs, p.logprobs);
  }
  for (int32_t id : p.stop_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return invalid_argument_error("stop_token_ids: {} is outside the vocabulary [0, {})", id,
                                    c.vocab_size);
    }
  }
  if (!p.stop.empty() && tokenizer_ == nullptr) {
    return invalid_argument_error(
        "stop strings need a tokenizer, and this model folder has no tokenizer.json");
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    if (p.stop[i].empty()) return invalid_argument_error("stop[{}] is an empty string", i);
  }
  const int32_t blocks = cache_->blocks_for(prompt_len + *max_tokens);
  if (blocks > cache_->num_blocks()) {
    return resource_exhausted_error(
        "prompt {} + max_tokens {} needs {} KV blocks; the whole cache has {}", prompt_len,
        *max_tokens, blocks, cache_->num_blocks());
  }
  return ok_status();
}

Result<uint64_t> Engine::submit(GenerationRequest request) {
  int32_t max_tokens = 0;
  LS_RETURN_IF_ERROR(validate_request(request, &max_tokens));
  if (in_system_.fetch_add(1) >= options_.max_queue) {
    in_system_.fetch_sub(1);
    return resource_exhausted_error("the server holds {} requests already (max_queue)",
                                    options_.max_queue);
  }
  auto seq = std::make_unique<Sequence>();
  seq->id = next_id_.fetch_add(1);
  seq->max_tokens = max_tokens;
  seq->tokens = request.prompt_token_ids;
  seq->prompt_len = static_cast<int32_t>(seq->tokens.size());
  seq->rng.seed(request.params.seed ? *request.params.seed : std::random_device{}());
  seq->submitted_at = Clock::now();
  if (!request.task_id.empty()) {
    seq->adapter = registry_->find(request.task_id);
    if (!seq->adapter) {
      in_system_.fetch_sub(1);
      return not_found_error("unknown task '{}': no adapter is loaded under that task ID",
                             request.task_id);
    }
    seq->adapter->in_flight.fetch_add(1);
  }
  if (tokenizer_) {
    seq->detokenizer = std::make_unique<tokenizer::IncrementalDecoder>(
        *tokenizer_, request.params.skip_special_tokens);
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
  for (uint64_t id : cancels) {
    auto it = live_.find(id);
    if (it == live_.end()) continue;
    SequenceUpdate u;
    finish(it->second.get(), FinishReason::kCancelled, ok_status(), &u);
  }
  const auto now = Clock::now();
  std::vector<Sequence*> expired;
  for (auto& [id, s] : live_) {
    if (s->request.deadline && *s->request.deadline <= now) expired.push_back(s.get());
  }
  for (Sequence* s : expired) {
    SequenceUpdate u;
    finish(s, FinishReason::kDeadline, ok_status(), &u);
  }
}

void Engine::emit(Sequence* s, SequenceUpdate& u) {
  u.sequence_id = s->id;
  u.prompt_tokens = s->prompt_len;
  u.completion_tokens = s->num_generated();
  if (s->first_scheduled_at) u.queue_ms = millis(s->submitted_at, *s->first_scheduled_at);
  if (s->first_token_at) u.ttft_ms = millis(s->submitted_at, *s->first_token_at);
  if (s->request.on_update) s->request.on_update(u);
}

void Engine::finish(Sequence* s, FinishReason reason, Status error, SequenceUpdate* u) {
  scheduler_->remove(s);
  if (s->slot >= 0) adapter_cache_->release(s->slot);
  if (s->adapter) {
    s->adapter->in_flight.fetch_sub(1);
    s->adapter->requests_served.fetch_add(1);
    s->adapter->tokens_generated.fetch_add(static_cast<uint64_t>(std::max(0, s->num_generated())));
  }
  if (s->detokenizer && reason != FinishReason::kError) {
    auto r = detokenize(s, u, /*finishing=*/true);
    if (!r.ok()) {
      reason = FinishReason::kError;
      error = r.status();
    } else if (*r == FinishReason::kStop) {
      reason = FinishReason::kStop;
    }
  }
  u->finished = true;
  u->finish_reason = reason;
  u->error = std::move(error);
  emit(s, *u);
  ++counters_.requests_finished;
  in_system_.fetch_sub(1);
  live_.erase(s->id);  // destroys s
}

Status Engine::step() {
  drain_inbox();
  std::vector<Sequence*> preempted;
  std::vector<ScheduledChunk> chunks = scheduler_->next(&preempted);
  counters_.preemptions += preempted.size();
  for (Sequence* s : preempted) {
    spdlog::debug("preempted sequence {} ({} tokens) to free KV blocks; it will be recomputed",
                  s->id, s->tokens.size());
  }
  if (chunks.empty()) {
    publish_stats();
    return ok_status();
  }
  // Rows of one adapter must be contiguous: order the chunks by slot (base-model rows first).
  std::stable_sort(
      chunks.begin(), chunks.end(),
      [](const ScheduledChunk& a, const ScheduledChunk& b) { return a.seq->slot < b.seq->slot; });
  const auto now = Clock::now();
  const int32_t bs = cache_->block_size();
  auto& m = meta_;
  m.token_ids.clear();
  m.positions.clear();
  m.slot_mapping.clear();
  m.row_seq.clear();
  m.block_tables.clear();
  m.logits_rows.clear();
  m.lora_segments.clear();
  m.lora_slices.clear();
  m.num_lora_tables = 0;
  m.max_blocks_per_seq = 0;
  for (const auto& ch : chunks)
    m.max_blocks_per_seq =
        std::max<int32_t>(m.max_blocks_per_seq, static_cast<int32_t>(ch.seq->blocks.size()));
  std::vector<size_t> sampling;  // chunk indices, in logits-row order
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    Sequence* s = chunks[ci].seq;
    if (!s->first_scheduled_at) s->first_scheduled_at = now;
    for (int32_t j = 0; j < chunks[ci].num_tokens; ++j) {
      const int32_t pos = s->num_computed + j;
      m.token_ids.push_back(s->tokens[static_cast<size_t>(pos)]);
      m.positions.push_back(pos);
      m.slot_mapping.push_back(s->blocks[static_cast<size_t>(pos / bs)] * bs + pos % bs);
      m.row_seq.push_back(static_cast<int32_t>(ci));
    }
    for (int32_t b = 0; b < m.max_blocks_per_seq; ++b) {
      m.block_tables.push_back(
          b < static_cast<int32_t>(s->blocks.size()) ? s->blocks[static_cast<size_t>(b)] : -1);
    }
    if (chunks[ci].samples()) {
      m.logits_rows.push_back(m.num_rows() - 1);
      sampling.push_back(ci);
    }
  }

  build_lora_meta(chunks);

  auto fail_all = [&](const Status& st) {
    spdlog::error("step failed: {}", st.to_string());
    for (const auto& ch : chunks) {
      SequenceUpdate u;
      finish(ch.seq, FinishReason::kError, st, &u);
    }
    publish_stats();
    return st;
  };
  auto logits = model_->forward(m, *cache_);
  if (!logits.ok()) return fail_all(logits.status());
  std::vector<kernels::SampleParams> params(sampling.size());
  for (size_t k = 0; k < sampling.size(); ++k) {
    Sequence* s = chunks[sampling[k]].seq;
    const auto& p = s->request.params;
    params[k].temperature = p.temperature;
    params[k].top_k = p.top_k;
    params[k].top_p = p.top_p;
    params[k].num_logprobs = p.logprobs;
    params[k].want_logprob = p.want_logprob;
    params[k].uniform = std::uniform_real_distribution<float>(0.0f, 1.0f)(s->rng);
  }
  if (!sampling.empty()) {
    Status st = backend_->sample(*logits, params, &samples_);
    if (!st.ok()) return fail_all(st);
  }
  std::vector<std::vector<float>> row_logits(sampling.size());
  for (size_t k = 0; k < sampling.size(); ++k) {
    if (!chunks[sampling[k]].seq->request.return_logits) continue;
    row_logits[k].resize(static_cast<size_t>(logits->cols));
    Status st =
        backend_->copy_to_host(logits->row_slice(static_cast<int64_t>(k), 1), row_logits[k].data());
    if (!st.ok()) return fail_all(st);
  }
  ++counters_.steps;
  for (const auto& ch : chunks) ch.seq->num_computed += ch.num_tokens;

  const auto& eos = model_->config().eos_token_ids;
  const auto done = Clock::now();
  for (size_t k = 0; k < sampling.size(); ++k) {
    Sequence* s = chunks[sampling[k]].seq;
    const auto& r = samples_[k];
    s->tokens.push_back(r.token_id);
    if (!s->first_token_at) s->first_token_at = done;
    ++counters_.tokens_generated;
    SequenceUpdate u;
    u.new_tokens.push_back({r.token_id, r.logprob, r.top});
    if (s->request.return_logits) u.logits.push_back(std::move(row_logits[k]));
    const auto& p = s->request.params;
    FinishReason reason = FinishReason::kNone;
    if (!p.ignore_eos && std::find(eos.begin(), eos.end(), r.token_id) != eos.end()) {
      reason = FinishReason::kEos;
    } else if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), r.token_id) !=
               p.stop_token_ids.end()) {
      reason = FinishReason::kStop;
    } else if (s->num_generated() >= s->max_tokens ||
               static_cast<int64_t>(s->tokens.size()) >= model_->config().max_context) {
      reason = FinishReason::kLength;
    }
    if (s->detokenizer && reason == FinishReason::kNone) {
      auto text = detokenize(s, &u, /*finishing=*/false);
      if (!text.ok()) {
        finish(s, FinishReason::kError, text.status(), &u);
        continue;
      }
      reason = *text;
    }
    if (reason != FinishReason::kNone) {
      finish(s, reason, ok_status(), &u);
    } else {
      emit(s, u);
    }
  }
  publish_stats();
  return ok_status();
}

Result<FinishReason> Engine::detokenize(Sequence* s, SequenceUpdate* u, bool finishing) {
  if (s->text_stopped) return FinishReason::kStop;
  const auto& stops = s->request.params.stop;
  const size_t before = s->text.size();
  for (; s->detokenized < s->num_generated(); ++s->detokenized) {
    const int32_t id = s->tokens[static_cast<size_t>(s->prompt_len + s->detokenized)];
    LS_ASSIGN_OR_RETURN(std::string piece, s->detokenizer->add(id));
    s->text += piece;
  }
  if (finishing) {
    LS_ASSIGN_OR_RETURN(std::string rest, s->detokenizer->flush());
    s->text += rest;
  }
  FinishReason reason = FinishReason::kNone;
  size_t deliverable = s->text.size();
  if (!stops.empty()) {
    // The earliest stop string that ends in the new text: the text ends before it.
    size_t longest = 0;
    for (const auto& stop : stops) longest = std::max(longest, stop.size());
    const size_t from = before >= longest ? before - longest + 1 : 0;
    size_t cut = std::string::npos;
    for (const auto& stop : stops) cut = std::min(cut, s->text.find(stop, from));
    if (cut != std::string::npos) {
      s->text.resize(cut);
      s->text_stopped = true;
      deliverable = cut;
      reason = FinishReason::kStop;
    } else if (!finishing) {
      // Hold back the longest tail that begins some stop string.
      for (const auto& stop : stops) {
        for (size_t len = std::min(stop.size() - 1, s->text.size()); len > 0; --len) {
          if (s->text.compare(s->text.size() - len, len, stop, 0, len) == 0) {
            deliverable = std::min(deliverable, s->text.size() - len);
            break;
          }
        }
      }
    }
  }
  if (deliverable > s->text_delivered) {
    u->new_text += s->text.substr(s->text_delivered, deliverable - s->text_delivered);
    s->text_delivered = deliverable;
  }
  return reason;
}

bool Engine::adapter_ready(Sequence* seq) {
  if (!seq->adapter) return true;
  if (seq->slot < 0) {
    auto slot = adapter_cache_->acquire(seq->adapter);
    if (!slot) return false;  // every slot is pinned by running requests: wait
    seq->slot = *slot;
  }
  return adapter_cache_->ready(seq->slot);
}

void Engine::build_lora_meta(const std::vector<ScheduledChunk>& chunks) {
  auto& m = meta_;
  int32_t row = 0;
  std::vector<int32_t> segment_slots;
  for (const auto& ch : chunks) {
    const int32_t slot = ch.seq->slot;
    if (slot >= 0) {
      if (segment_slots.empty() || segment_slots.back() != slot) {
        m.lora_segments.push_back({row, row});
        segment_slots.push_back(slot);
      }
      m.lora_segments.back().row_end = row + ch.num_tokens;
    }
    row += ch.num_tokens;
  }
  if (segment_slots.empty()) return;
  m.num_lora_tables = adapters::num_lora_tables(model_->config());
  const size_t nseg = segment_slots.size();
  m.lora_slices.resize(static_cast<size_t>(m.num_lora_tables) * nseg);
  for (int32_t t = 0; t < m.num_lora_tables; ++t) {
    for (size_t k = 0; k < nseg; ++k) {
      m.lora_slices[static_cast<size_t>(t) * nseg + k] = adapter_cache_->slice(segment_slots[k], t);
    }
  }
}

Status Engine::run_until_idle() {
  while (has_work()) {
    const uint64_t before = counters_.steps + counters_.requests_finished;
    LS_RETURN_IF_ERROR(step());
    if (counters_.steps + counters_.requests_finished == before && !live_.empty()) {
      return internal_error("engine made no progress with {} sequences waiting", live_.size());
    }
  }
  return ok_status();
}

Status Engine::run_loop(std::stop_token stop) {
  while (!stop.stop_requested()) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, stop, [&] { return !inbox_.empty() || !cancels_.empty() || !live_.empty(); });
    }
    if (stop.stop_requested()) break;
    Status st = step();
    if (!st.ok()) spdlog::error("engine step: {}", st.to_string());
  }
  return ok_status();
}

void Engine::publish_stats() {
  adapter_cache_->sweep();
  counters_.adapter_slots_total = adapter_cache_->num_slots();
  counters_.adapter_slots_used = adapter_cache_->slots_used();
  counters_.adapter_loads = adapter_cache_->counters().loads;
  counters_.adapter_evictions = adapter_cache_->counters().evictions;
  counters_.waiting_for_adapter.clear();
  for (const Sequence* s : scheduler_->waiting()) {
    if (!s->adapter || (s->slot >= 0 && adapter_cache_->ready(s->slot))) continue;
    auto& w = counters_.waiting_for_adapter;
    auto it = std::find_if(w.begin(), w.end(),
                           [&](const auto& p) { return p.first == s->adapter->task_id; });
    if (it == w.end()) {
      w.emplace_back(s->adapter->task_id, 1);
    } else {
      ++it->second;
    }
  }
  counters_.adapter_slots.clear();
  for (const auto& info : adapter_cache_->snapshot())
    counters_.adapter_slots.emplace_back(info.version, info.slot);
  counters_.running = static_cast<int32_t>(scheduler_->num_running());
  counters_.waiting = static_cast<int32_t>(scheduler_->num_waiting());
  counters_.kv_blocks_free = cache_->num_free_blocks();
  std::lock_guard<std::mutex> lock(mu_);
  published_ = counters_;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return published_;
}

}  // namespace loraserve::engine
