#include "engine/admission.h"

#include <algorithm>
#include <cmath>

namespace loraserve::engine {

namespace {

Status validate_penalties(const SamplingParams& p, int32_t vocab_size) {
  // vLLM's ranges; OpenAI's for the penalties and logit_bias.
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) {
    return invalid_argument_error("repetition_penalty must be a finite number > 0, got {}",
                                  p.repetition_penalty);
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return invalid_argument_error("frequency_penalty must be in [-2, 2], got {}",
                                  p.frequency_penalty);
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return invalid_argument_error("presence_penalty must be in [-2, 2], got {}",
                                  p.presence_penalty);
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    return invalid_argument_error("min_p must be in [0, 1], got {}", p.min_p);
  for (int32_t id : p.allowed_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return invalid_argument_error(
          "allowed_token_ids: token id {} is outside the vocabulary [0, {})", id, vocab_size);
    }
  }
  if (p.min_tokens < 0)
    return invalid_argument_error("min_tokens must be >= 0, got {}", p.min_tokens);
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return invalid_argument_error("logit_bias: token id {} is outside the vocabulary [0, {})",
                                    token, vocab_size);
    }
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return invalid_argument_error("logit_bias: token {} has bias {}; it must be in [-100, 100]",
                                    token, bias);
    }
  }
  return ok_status();
}

}  // namespace

Result<int32_t> validate_request(const GenerationRequest& r, const AdmissionLimits& limits) {
  LS_RETURN_IF_ERROR(limits.request.check_request(r));
  const auto& p = r.params;
  if (r.prompt_token_ids.empty()) return invalid_argument_error("prompt is empty");
  LS_RETURN_IF_ERROR(limits.request.check_prompt_tokens(r.prompt_token_ids.size()));
  for (size_t i = 0; i < r.prompt_token_ids.size(); ++i) {
    const int32_t id = r.prompt_token_ids[i];
    if (id < 0 || id >= limits.vocab_size) {
      return invalid_argument_error(
          "prompt token id {} (at index {}) is outside the vocabulary [0, {})", id, i,
          limits.vocab_size);
    }
  }
  const int64_t prompt_len = static_cast<int64_t>(r.prompt_token_ids.size());
  if (prompt_len >= limits.max_context) {
    return invalid_argument_error(
        "prompt has {} tokens; the model's context holds {} (prompt and output together)",
        prompt_len, limits.max_context);
  }
  int32_t max_tokens = 0;
  if (p.max_tokens) {
    if (*p.max_tokens < 1)
      return invalid_argument_error("max_tokens must be at least 1, got {}", *p.max_tokens);
    if (prompt_len + *p.max_tokens > limits.max_context) {
      return invalid_argument_error(
          "max_tokens {} runs past the context: prompt {} + max_tokens {} > {}", *p.max_tokens,
          prompt_len, *p.max_tokens, limits.max_context);
    }
    max_tokens = *p.max_tokens;
  } else {
    max_tokens = static_cast<int32_t>(
        std::min<int64_t>(limits.default_max_tokens, limits.max_context - prompt_len));
  }
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return invalid_argument_error("temperature must be a finite number >= 0, got {}",
                                  p.temperature);
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return invalid_argument_error("top_p must be in (0, 1], got {}", p.top_p);
  if (p.top_k < 0)
    return invalid_argument_error("top_k must be >= 0 (0 turns it off), got {}", p.top_k);
  for (int32_t id : p.stop_token_ids) {
    if (id < 0 || id >= limits.vocab_size) {
      return invalid_argument_error("stop_token_ids: {} is outside the vocabulary [0, {})", id,
                                    limits.vocab_size);
    }
  }
  LS_RETURN_IF_ERROR(validate_penalties(p, limits.vocab_size));
  if (p.min_tokens > max_tokens) {
    return invalid_argument_error("min_tokens {} is more than max_tokens {}", p.min_tokens,
                                  max_tokens);
  }
  if (!p.stop.empty() && !limits.has_tokenizer) {
    return invalid_argument_error(
        "stop strings need a tokenizer, and this model folder has no tokenizer.json");
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    if (p.stop[i].empty()) return invalid_argument_error("stop[{}] is an empty string", i);
  }
  const int64_t blocks =
      (prompt_len + max_tokens + limits.kv_block_size - 1) / limits.kv_block_size;
  if (blocks > limits.kv_blocks) {
    return resource_exhausted_error(
        "prompt {} + max_tokens {} needs {} KV blocks; the whole cache has {}", prompt_len,
        max_tokens, blocks, limits.kv_blocks);
  }
  return max_tokens;
}

Result<adapters::AdapterLease> hold_adapter(adapters::AdapterRegistry& registry,
                                            GenerationRequest& request) {
  const std::string& task = request.task_id;
  if (task.empty()) return adapters::AdapterLease{};
  if (request.adapter) {
    if (request.adapter->task_id != task) {
      return internal_error("the request for task '{}' holds an adapter of task '{}'", task,
                            request.adapter->task_id);
    }
    return std::move(request.adapter);
  }
  adapters::AdapterLease lease = registry.acquire(task);
  if (!lease)
    return not_found_error("unknown task '{}': no adapter is loaded under that task ID", task);
  return lease;
}

Status QueueLimits::reserve(const std::string& task) {
  std::lock_guard<std::mutex> lock(mu_);
  if (held_ >= max_queue_) {
    return resource_exhausted_error("the server holds {} requests already (max_queue)", max_queue_);
  }
  int32_t& mine = per_task_[task];
  if (max_per_task_ > 0 && mine >= max_per_task_) {
    return resource_exhausted_error(
        "{} holds {} requests already (max_queue_per_task); other tasks are still served",
        task.empty() ? std::string("the base model") : fmt::format("task '{}'", task), mine);
  }
  ++mine;
  ++held_;
  return ok_status();
}

void QueueLimits::release(const std::string& task) {
  std::lock_guard<std::mutex> lock(mu_);
  --held_;
  auto it = per_task_.find(task);
  if (--it->second == 0) per_task_.erase(it);
}

int32_t QueueLimits::held() const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_;
}

int32_t QueueLimits::held(const std::string& task) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = per_task_.find(task);
  return it == per_task_.end() ? 0 : it->second;
}

Sequence* Admission::admit() {
  // Requests of one adapter version are all ready or all not: ask once per version.
  std::vector<const adapters::AdapterVersion*> not_ready;
  auto startable = [&](Sequence* s) {
    const adapters::AdapterVersion* v = s->adapter.ref().get();
    if (v != nullptr && std::find(not_ready.begin(), not_ready.end(), v) != not_ready.end())
      return false;
    if (adapter_ready_(s)) return true;
    if (v != nullptr) not_ready.push_back(v);
    return false;
  };
  Sequence* s = queue_.next(startable);
  if (s == nullptr) return nullptr;
  const int32_t need = kv_->blocks_for(static_cast<int64_t>(s->tokens.size()));
  if (kv_->num_free() < need) return nullptr;
  for (int32_t b = 0; b < need; ++b) s->blocks.push_back(*kv_->allocate());
  queue_.start(s);
  return s;
}

}  // namespace loraserve::engine
