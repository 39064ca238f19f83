// AdapterLoader: turns a request's task ID into a lease on the adapter that serves it, loading
// the adapter on first use when on-demand loading is on (`--load-on-demand`): a task that is not
// registered but whose ID names a folder `<adapter-root>/<task>` is read on the loader's own
// threads (never on a gRPC or HTTP thread), and every request that asks for it meanwhile waits
// for that one load. The registry keeps at most --max-host-adapters, evicting adapters loaded on
// demand least recently used first, never one a request holds.
// Thread-safe; stop() (or the destructor) waits for the loads in progress and answers their
// requests.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "adapters/registry.h"
#include "common/status.h"
#include "server/adapter_root.h"
#include "server/executor.h"

namespace loraserve::server {

class AdapterLoader {
 public:
  using Done = std::function<void(Result<adapters::AdapterLease>)>;

  // Loads on demand when `root` is set and `on_demand` is true; otherwise an unregistered task
  // is NOT_FOUND. `registry` must outlive the loader.
  AdapterLoader(adapters::AdapterRegistry* registry, std::optional<AdapterRoot> root,
                bool on_demand);
  ~AdapterLoader();

  // Resolves `task_id` ("" is the base model: an empty lease) and calls `done` exactly once:
  // at once, on the caller's thread, when the task is served (or cannot be); on a loader thread
  // once its load has finished otherwise. Errors: NOT_FOUND (not served, and no folder of that
  // name, or on-demand loading is off), INVALID_ARGUMENT (an ID that is not a plain folder
  // name, or an adapter that does not load: the message names the file), PERMISSION_DENIED (the
  // folder is a link that leads outside the adapter root; the message does not show the root),
  // RESOURCE_EXHAUSTED (the host tier is full of adapters that cannot be evicted).
  void resolve(const std::string& task_id, Done done);

  // Waits for the loads in progress; resolve() answers UNAVAILABLE for a task it would have to
  // load from now on.
  void stop();

  bool on_demand() const { return on_demand_; }
  // Requests waiting for a load, and the tasks being loaded (sorted).
  int32_t requests_waiting() const;
  std::vector<std::string> loading_tasks() const;

 private:
  void load(const std::string& task_id);

  adapters::AdapterRegistry* registry_;
  std::optional<AdapterRoot> root_;
  bool on_demand_;

  mutable std::mutex mu_;
  std::map<std::string, std::vector<Done>> loading_;  // task → requests waiting for its load
  int32_t waiting_ = 0;
  bool stopping_ = false;
  std::vector<std::unique_ptr<Executor>> workers_;  // loads of different tasks run side by side
  size_t next_worker_ = 0;
};

}  // namespace loraserve::server
