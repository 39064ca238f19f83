// AdapterRegistry: task ID → the adapter version currently served for it. Load, replace and
// unload are atomic; a request pins the version it was admitted with (a shared_ptr), so replacing
// or unloading never disturbs requests in flight, and a version's memory is freed when its last
// holder lets go. Thread-safe: admin calls and request admission run on different threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "adapters/lora_adapter.h"
#include "common/status.h"

namespace loraserve::adapters {

// One loaded adapter under its task ID. Immutable but for its counters.
struct AdapterVersion {
  std::string task_id;
  uint64_t version = 0;  // unique across the registry's life; a replacement gets a new one
  std::shared_ptr<const LoraAdapter> adapter;
  std::string source;  // the folder it came from ("" when built in memory)
  std::chrono::system_clock::time_point loaded_at;
  mutable std::atomic<uint64_t> requests_served{0};
  mutable std::atomic<int64_t> in_flight{0};
  mutable std::atomic<uint64_t> tokens_generated{0};
};
using AdapterRef = std::shared_ptr<const AdapterVersion>;

// How one load is made.
struct LoadOptions {
  bool replace = false;  // without it, a task that is already served is ALREADY_EXISTS
  // Non-empty: a real path that the adapter folder and every file read from it must lie inside
  // (--adapter-root; see common/untrusted_file.h).
  std::string root;
  // Asked while the adapter is read (between modules) and, under the registry's lock, right
  // before the new version is installed: a non-OK status (the caller gave up: cancelled,
  // deadline passed) abandons the load, which then never takes effect, and is returned.
  std::function<Status()> still_wanted;
};

struct RegistryOptions {
  int32_t max_adapters = 64;  // adapters held in host memory at once (--max-host-adapters)
  int32_t max_rank = 64;      // --max-lora-rank
};

class AdapterRegistry {
 public:
  AdapterRegistry(const formats::ModelConfig& model, kernels::Backend* backend,
                  const RegistryOptions& options)
      : model_(model), backend_(backend), options_(options) {}

  // Reads the adapter in `dir` and serves it under `task_id`. On any error the registry is
  // unchanged.
  Result<AdapterRef> load(const std::string& task_id, const std::string& dir,
                          const LoadOptions& options);
  Result<AdapterRef> load(const std::string& task_id, const std::string& dir, bool replace) {
    return load(task_id, dir, LoadOptions{replace, "", nullptr});
  }
  // Serves an adapter built in memory (tests, benches) under `task_id`.
  Result<AdapterRef> add(const std::string& task_id, std::shared_ptr<const LoraAdapter> adapter,
                         bool replace);
  // Stops serving `task_id` (NOT_FOUND when it is not served). Requests in flight finish on it.
  Status unload(const std::string& task_id);
  // The version served now, or nullptr.
  AdapterRef find(const std::string& task_id) const;
  std::vector<AdapterRef> list() const;
  size_t size() const;
  const RegistryOptions& options() const { return options_; }
  const formats::ModelConfig& model() const { return model_; }
  kernels::Backend* backend() const { return backend_; }

  // Task IDs are 1 to kMaxTaskIdLength characters of [A-Za-z0-9._:-] (they appear in logs and
  // metric labels).
  static constexpr int32_t kMaxTaskIdLength = 128;
  static Status validate_task_id(const std::string& task_id);

 private:
  Result<AdapterRef> install(const std::string& task_id, std::shared_ptr<const LoraAdapter> adapter,
                             const std::string& source, const LoadOptions& options);

  formats::ModelConfig model_;
  kernels::Backend* backend_;
  RegistryOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, AdapterRef> served_;
  uint64_t next_version_ = 1;
};

}  // namespace loraserve::adapters
