#include "engine/request_limits.h"

#include <limits>
#include <string>

namespace loraserve::engine {
namespace {

// INVALID_ARGUMENT naming `flag` unless lo <= value <= hi.
Status check_range(std::string_view flag, int64_t value, int64_t lo, int64_t hi) {
  if (value >= lo && value <= hi) return ok_status();
  return invalid_argument_error("{} must be in [{}, {}], got {}", flag, lo, hi, value);
}

}  // namespace

Status RequestLimits::validate() const {
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  LS_RETURN_IF_ERROR(check_range("--max-prompt-tokens", max_prompt_tokens, 0, kInt32Max));
  LS_RETURN_IF_ERROR(check_range("--max-stop-strings", max_stop_strings, 0, kInt32Max));
  LS_RETURN_IF_ERROR(check_range("--max-stop-bytes", max_stop_bytes, 1, kInt32Max));
  LS_RETURN_IF_ERROR(check_range("--max-stop-token-ids", max_stop_token_ids, 0, kInt32Max));
  LS_RETURN_IF_ERROR(check_range("--max-logprobs", max_logprobs, 0, kMaxLogprobs));
  LS_RETURN_IF_ERROR(check_range("--max-task-id-length", max_task_id_length, 1,
                                 adapters::AdapterRegistry::kMaxTaskIdLength));
  return check_range("--max-request-id-bytes", max_request_id_bytes, 0, kInt32Max);
}

Status RequestLimits::check_task_id(std::string_view task_id, std::string_view field) const {
  if (task_id.size() > static_cast<size_t>(max_task_id_length)) {
    return invalid_argument_error("{} has {} bytes; at most {} (--max-task-id-length)", field,
                                  task_id.size(), max_task_id_length);
  }
  Status st = adapters::AdapterRegistry::validate_task_id(std::string(task_id));
  if (!st.ok() && field != "task_id") return st.with_context(field);
  return st;
}

Status RequestLimits::check_request_id(std::string_view request_id) const {
  if (request_id.size() > static_cast<size_t>(max_request_id_bytes)) {
    return invalid_argument_error("request_id has {} bytes; at most {} (--max-request-id-bytes)",
                                  request_id.size(), max_request_id_bytes);
  }
  for (size_t i = 0; i < request_id.size(); ++i) {
    const auto byte = static_cast<unsigned char>(request_id[i]);
    if (byte < 0x20 || byte == 0x7f) {
      return invalid_argument_error(
          "request_id holds the control character {:#04x} at byte {} (it goes into the request "
          "log)",
          byte, i);
    }
  }
  return ok_status();
}

Status RequestLimits::check_request(const GenerationRequest& r) const {
  if (!r.task_id.empty()) LS_RETURN_IF_ERROR(check_task_id(r.task_id));
  LS_RETURN_IF_ERROR(check_request_id(r.request_id));
  const SamplingParams& p = r.params;
  if (p.stop.size() > static_cast<size_t>(max_stop_strings)) {
    return invalid_argument_error("stop has {} strings; at most {} (--max-stop-strings)",
                                  p.stop.size(), max_stop_strings);
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    if (p.stop[i].size() > static_cast<size_t>(max_stop_bytes)) {
      return invalid_argument_error("stop[{}] has {} bytes; at most {} (--max-stop-bytes)", i,
                                    p.stop[i].size(), max_stop_bytes);
    }
  }
  if (p.stop_token_ids.size() > static_cast<size_t>(max_stop_token_ids)) {
    return invalid_argument_error("stop_token_ids has {} ids; at most {} (--max-stop-token-ids)",
                                  p.stop_token_ids.size(), max_stop_token_ids);
  }
  if (p.logprobs < 0 || p.logprobs > max_logprobs) {
    return invalid_argument_error("logprobs must be in [0, {}], got {} (--max-logprobs)",
                                  max_logprobs, p.logprobs);
  }
  return ok_status();
}

Status RequestLimits::check_prompt_text(std::string_view text) const {
  if (text.empty()) {
    return invalid_argument_error(
        "prompt text is empty: send at least one character, or token ids");
  }
  return ok_status();
}

Status RequestLimits::check_prompt_tokens(size_t tokens) const {
  if (max_prompt_tokens > 0 && tokens > static_cast<size_t>(max_prompt_tokens)) {
    return invalid_argument_error("prompt has {} tokens; at most {} (--max-prompt-tokens)", tokens,
                                  max_prompt_tokens);
  }
  return ok_status();
}

}  // namespace loraserve::engine
