// Flags shared by the commands that run an engine (generate, serve, bench).
#pragma once

#include <CLI/CLI.hpp>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cli/flag_checks.h"
#include "common/untrusted_json.h"
#include "engine/engine.h"
#include "kernels/backend.h"

namespace loraserve::cli {

inline constexpr int32_t kInt32Max = std::numeric_limits<int32_t>::max();
// Upper bounds of flags that size threads and tables up front (past them a process dies of
// thread creation or of memory before it can say why).
inline constexpr int32_t kMaxCpuThreads = 1024;
inline constexpr int32_t kMaxDeviceAdapters = 16384;

// --log-level, checked against spdlog's names (it reads any other as "off").
void add_log_level_flag(CLI::App* cmd, std::string* level);

struct EngineFlags {
  std::string model;
  kernels::BackendOptions backend;
  engine::EngineOptions engine;
  double kv_cache_gib = 0.0;
  JsonLimits json_limits;  // --max-json-bytes, --max-config-bytes, --max-json-depth
  std::string fairness = "vtc";
  std::vector<std::string> task_weights;  // TASK=W, checked when parsed

  // Copies kv_cache_gib, fairness and task_weights into `engine`.
  void finalize();
};

// The engine's flags, the request limits' among them.
void add_engine_flags(CLI::App* cmd, EngineFlags* flags);
// --max-json-bytes and --max-json-depth: the limits on every JSON file read (config.json,
// tokenizer.json, adapter_config.json, safetensors headers, --config); --max-config-bytes: the
// lower one on config.json, generation_config.json and adapter_config.json. A command applies
// them with set_json_limits before it reads a file.
void add_json_limit_flags(CLI::App* cmd, JsonLimits* limits);
// The request limits' flags (--max-prompt-tokens, --max-stop-strings, --max-stop-bytes,
// --max-stop-token-ids, --max-logprobs, --max-task-id-length, --max-request-id-bytes).
void add_request_limit_flags(CLI::App* cmd, engine::RequestLimits* limits);

// Where the shipped demo model is looked for, in order: $LORASERVE_MODEL, the installed
// <prefix>/share/loraserve/models/demo (found from the executable's path), the source tree's
// models/demo.
std::vector<std::string> default_model_candidates();
// The first candidate that holds a config.json, or "" when none does.
std::string default_model_dir();
// default_model_dir(), or INVALID_ARGUMENT listing where it looked.
Result<std::string> default_model_dir_or_error();
// "TASK=DIR" as (task, folder); INVALID_ARGUMENT naming `flag` when either side is missing.
Result<std::pair<std::string, std::string>> parse_task_dir(const std::string& spec,
                                                           std::string_view flag);
// "TASK=DIR" for each adapter folder shipped in `model_dir`/adapters (the task is the folder's
// name), sorted; empty when there is no such folder. The demo model ships its adapters so.
std::vector<std::string> bundled_adapter_specs(const std::string& model_dir);

// Logs to stderr through spdlog (stdout carries results). level: trace..off.
void set_up_logging(const std::string& level);

}  // namespace loraserve::cli
