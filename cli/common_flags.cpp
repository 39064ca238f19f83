#include "cli/common_flags.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include "common/excerpt.h"

namespace loraserve::cli {
void add_json_limit_flags(CLI::App* cmd, JsonLimits* limits) {
  cmd->add_option("--max-json-bytes", limits->max_bytes,
                  "Largest JSON file read (config.json, tokenizer.json, adapter_config.json, "
                  "safetensors headers, --config); larger files are refused unread")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--max-config-bytes", limits->max_config_bytes,
                  "Largest config.json, generation_config.json or adapter_config.json read "
                  "(real ones are a few KB; parsing costs about 30 times the size)")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--max-json-depth", limits->max_depth,
                  "Deepest nesting of arrays and objects accepted in a JSON file")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxJsonDepthCeiling));
}

void add_engine_flags(CLI::App* cmd, EngineFlags* f) {
  cmd->add_option("--model", f->model,
                  "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)");
  cmd->add_option("--device", f->backend.device, "cpu, cuda, cuda:N or auto (a GPU when present)")
      ->envname("LORASERVE_DEVICE")
      ->capture_default_str();
  cmd->add_option("--threads", f->backend.cpu_threads, "CPU threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, kMaxCpuThreads));
  cmd->add_option_function<std::string>(
         "--weights-dtype",
         [f](const std::string& value) {
           auto parsed = kernels::parse_weights_dtype_flag(value);
           if (!parsed.ok()) throw CLI::ValidationError(parsed.status().message());
           f->backend.cpu_weight_dtype = *parsed;
         },
         "CPU backend: weight matrices in f32, bf16 or int8 (symmetric, one scale per 64 "
         "weights of a row); auto: bf16 for bf16/f16 checkpoints on CPUs with AVX512_BF16 or "
         "AMX, else f32")
      ->default_str("auto");
  cmd->add_option_function<std::string>(
         "--lora-dtype",
         [f](const std::string& value) {
           auto parsed = kernels::parse_lora_dtype_flag(value);
           if (!parsed.ok()) throw CLI::ValidationError(parsed.status().message());
           f->backend.cpu_lora_dtype = *parsed;
         },
         "CPU backend: adapters' A and B in f32 or bf16 (half the memory and reads; f32 files "
         "rounded to bf16); auto: bf16 for adapter files in bf16 (exact), else f32")
      ->default_str("auto");
  cmd->add_option("--max-batch-size", f->engine.max_batch_size, "Sequences per step")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--max-batched-tokens", f->engine.max_batched_tokens,
                  "Rows per step; longer prompts are prefilled in chunks")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--block-size", f->engine.block_size, "KV-cache tokens per block")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--kv-cache-memory", f->kv_cache_gib,
                  "KV-cache size in GiB (0: room for max-batch-size full contexts, within memory)")
      ->capture_default_str()
      ->check(finite_in(1 << 20));
  cmd->add_option("--max-queue", f->engine.max_queue, "Requests held at once (running and waiting)")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--max-queue-per-task", f->engine.max_queue_per_task,
                  "Requests one task may hold at once; past it only that task is refused (0: no "
                  "limit but --max-queue)")
      ->capture_default_str()
      ->check(CLI::Range(0, kInt32Max));
  cmd->add_option("--fairness", f->fairness,
                  "Which waiting request starts next: vtc (each task its share, by Virtual Token "
                  "Counter) or fifo (the oldest)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fifo", "vtc"}));
  cmd->add_option("--task-weight", f->task_weights,
                  "TASK=W: the task's share under vtc relative to the others' 1 (an empty TASK is "
                  "the base model; repeatable)")
      ->check(CLI::Validator(
          [](std::string& spec) {
            auto w = engine::parse_task_weight(spec);
            return w.ok() ? std::string() : w.status().message();
          },
          "TASK=W"));
  cmd->add_option("--vtc-prompt-weight", f->engine.fairness.prompt_weight,
                  "vtc: a task's counter grows by this per prompt token served")
      ->capture_default_str()
      ->check(finite_in(1e6));
  cmd->add_option("--vtc-output-weight", f->engine.fairness.output_weight,
                  "vtc: ... and by this per generated token")
      ->capture_default_str()
      ->check(finite_in(1e6));
  cmd->add_option("--max-lora-rank", f->engine.max_lora_rank, "Largest LoRA rank accepted")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--max-device-adapters", f->engine.max_device_adapters,
                  "Adapter slots on the device (least recently used unpinned adapters are evicted)")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxDeviceAdapters));
  cmd->add_option("--max-host-adapters", f->engine.max_host_adapters,
                  "Adapters loaded at once (in host memory)")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--default-max-tokens", f->engine.default_max_tokens,
                  "max_tokens of requests that set none (capped by the context)")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  add_json_limit_flags(cmd, &f->json_limits);
  add_request_limit_flags(cmd, &f->engine.request_limits);
}

void add_request_limit_flags(CLI::App* cmd, engine::RequestLimits* l) {
  cmd->add_option("--max-prompt-tokens", l->max_prompt_tokens,
                  "Longest prompt in tokens (0: what the model's context holds)")
      ->capture_default_str()
      ->check(CLI::Range(0, kInt32Max));
  cmd->add_option("--max-stop-strings", l->max_stop_strings, "Stop strings per request")
      ->capture_default_str()
      ->check(CLI::Range(0, kInt32Max));
  cmd->add_option("--max-stop-bytes", l->max_stop_bytes, "Bytes of one stop string")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--max-stop-token-ids", l->max_stop_token_ids, "Stop token ids per request")
      ->capture_default_str()
      ->check(CLI::Range(0, kInt32Max));
  cmd->add_option("--max-logprobs", l->max_logprobs,
                  "Most top logprobs per token a request may ask")
      ->capture_default_str()
      ->check(CLI::Range(0, engine::kMaxLogprobs));
  cmd->add_option("--max-task-id-length", l->max_task_id_length, "Longest task ID (characters)")
      ->capture_default_str()
      ->check(CLI::Range(1, adapters::AdapterRegistry::kMaxTaskIdLength));
  cmd->add_option("--max-request-id-bytes", l->max_request_id_bytes,
                  "Longest request_id a client may send (bytes)")
      ->capture_default_str()
      ->check(CLI::Range(0, kInt32Max));
}

void EngineFlags::finalize() {
  // The flag's check kept it finite and at most 2^20 GiB; a size below one byte is not "unset".
  engine.kv_cache_bytes = static_cast<int64_t>(kv_cache_gib * (1ull << 30));
  if (kv_cache_gib > 0 && engine.kv_cache_bytes < 1) engine.kv_cache_bytes = 1;
  // The flags' checks accepted both.
  if (auto policy = engine::parse_fairness_policy(fairness); policy.ok())
    engine.fairness.policy = *policy;
  for (const std::string& spec : task_weights) {
    if (auto w = engine::parse_task_weight(spec); w.ok())
      engine.fairness.task_weights[w->first] = w->second;
  }
}

std::vector<std::string> default_model_candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("LORASERVE_MODEL"); env != nullptr && *env != '\0')
    out.emplace_back(env);
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    out.push_back(
        (exe.parent_path().parent_path() / "share" / "loraserve" / "models" / "demo").string());
  }
  out.push_back(std::string(LORASERVE_SOURCE_DIR) + "/models/demo");
  return out;
}

std::string default_model_dir() {
  for (const std::string& dir : default_model_candidates()) {
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::path(dir) / "config.json", ec)) return dir;
  }
  return "";
}

Result<std::string> default_model_dir_or_error() {
  std::string dir = default_model_dir();
  if (dir.empty()) {
    return invalid_argument_error(
        "no --model given, LORASERVE_MODEL is not set and the demo model was not found in {}: "
        "pass --model DIR (a Hugging Face model folder)",
        fmt::join(default_model_candidates(), ", "));
  }
  return dir;
}

Result<std::pair<std::string, std::string>> parse_task_dir(const std::string& spec,
                                                           std::string_view flag) {
  const size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    return invalid_argument_error("{} '{}' must be TASK=DIR", flag, spec);
  return std::make_pair(spec.substr(0, eq), spec.substr(eq + 1));
}

std::vector<std::string> bundled_adapter_specs(const std::string& model_dir) {
  std::vector<std::string> out;
  const std::filesystem::path adapters = std::filesystem::path(model_dir) / "adapters";
  std::error_code ec;
  if (!std::filesystem::is_directory(adapters, ec)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(adapters, ec)) {
    if (entry.is_directory(ec) && std::filesystem::exists(entry.path() / "adapter_config.json", ec))
      out.push_back(entry.path().filename().string() + "=" + entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void add_log_level_flag(CLI::App* cmd, std::string* level) {
  // spdlog reads a name it does not know as "off": a typo would hide the error that ends the run.
  cmd->add_option("--log-level", *level, "trace, debug, info, warn, error, critical, off")
      ->capture_default_str()
      ->check(CLI::IsMember(
          {"trace", "debug", "info", "warn", "warning", "error", "err", "critical", "off"}));
}

void set_up_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("loraserve");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
}

}  // namespace loraserve::cli
