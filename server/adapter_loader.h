// AdapterLoader: turns a request's task ID into a lease on the adapter that serves it, loading
// the adapter on first use when on-demand loading is on (`--load-on-demand`): a task that is not
// registered but whose ID names a folder `<adapter-root>/<task>` is read on the loader's own
// threads (never on a gRPC or HTTP thread), and every request that asks for it meanwhile waits
// for that one load. The registry keeps at most --max-host-adapters, evicting adapters loaded on
// demand least recently used first, never one a request holds. When all of them are held by
// requests, a task to load waits (is parked) until one of those requests ends, as LoRAX and
// S-LoRA queue such requests instead of refusing them: parked tasks load in the order they
// parked, and a new task waits behind them; each of their requests waits until its deadline,
// or until its caller gives up, and at most `max_waiting` requests wait in all.
// Thread-safe; stop() (or the destructor) waits for the loads in progress and answers their
// requests.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "adapters/registry.h"
#include "common/status.h"
#include "server/adapter_root.h"
#include "server/executor.h"

namespace loraserve::server {

class AdapterLoader {
 public:
  using Clock = std::chrono::steady_clock;
  using Done = std::function<void(Result<adapters::AdapterLease>)>;

  // How long a request may wait for its adapter, beyond the load itself.
  struct Patience {
    std::optional<Clock::time_point> deadline;  // nullopt: as long as it takes
    std::function<bool()> abandoned;            // true once its caller gave up (may be empty)
  };

  // Loads on demand when `root` is set and `on_demand` is true; otherwise an unregistered task
  // is NOT_FOUND. At most `max_waiting` requests wait for loads at once (the server passes
  // --max-queue). `registry` must outlive the loader.
  AdapterLoader(adapters::AdapterRegistry* registry, std::optional<AdapterRoot> root,
                bool on_demand, int32_t max_waiting = 1024);
  ~AdapterLoader();

  // Resolves `task_id` ("" is the base model: an empty lease) and calls `done` exactly once:
  // at once, on the caller's thread, when the task is served (or cannot be); on a loader thread
  // once its load has finished otherwise. Errors: NOT_FOUND (not served, and no folder of that
  // name, or on-demand loading is off), INVALID_ARGUMENT (an ID that is not a plain folder
  // name, or an adapter that does not load: the message names the file), PERMISSION_DENIED (the
  // folder is a link that leads outside the adapter root; the message does not show the root),
  // RESOURCE_EXHAUSTED (the host tier is full of adapters loaded by Admin or --preload, the
  // adapter's memory cannot be allocated, or `max_waiting` requests wait already),
  // DEADLINE_EXCEEDED or CANCELLED (it waited for room,
  // and its deadline passed or its caller gave up: checked every kSweepPeriod).
  void resolve(const std::string& task_id, Done done, Patience patience = {});

  // Waits for the loads in progress; resolve() answers UNAVAILABLE for a task it would have to
  // load from now on, and so are the requests waiting for room.
  void stop();

  bool on_demand() const { return on_demand_; }
  // Requests waiting for a load (parked ones included), and the tasks being loaded or parked
  // (sorted).
  int32_t requests_waiting() const;
  std::vector<std::string> loading_tasks() const;
  // Tasks parked now (waiting for room in the host tier), and how many times a task parked.
  int32_t tasks_parked() const;
  uint64_t parks() const;

  static constexpr std::chrono::milliseconds kSweepPeriod{50};

 private:
  struct Waiter {
    Done done;
    Patience patience;
  };
  // A task being loaded or waiting for room, with the requests that wait for it.
  struct Pending {
    std::vector<Waiter> waiters;
    bool parked = false;   // in parked_
    bool loading = false;  // a load is posted or running
  };

  // Posts the task's load to a worker. REQUIRES: mu_ held, !stopping_.
  void post_load_locked(const std::string& task_id);
  // Starts the load of the first parked task that is not loading already. REQUIRES: mu_ held.
  void retry_parked_locked();
  // The task's folder under the root, or the error its requests get.
  Result<std::string> folder_of(const std::string& task_id) const;
  // Loads the task, or parks it while the host tier has no room.
  void load(const std::string& task_id);
  // Puts the task at the end of the parked ones (where it stays when it is there already).
  // REQUIRES: mu_ held.
  void park_locked(const std::string& task_id, Pending* p);
  // Drops the task from pending_ (and parked_). REQUIRES: mu_ held.
  void forget_locked(const std::string& task_id);
  // Answers every request waiting for `task_id` with `result` and forgets the task.
  void finish(const std::string& task_id, Result<adapters::AdapterLease> result);
  // Answers the parked requests whose deadline passed or whose caller gave up.
  void sweep();

  adapters::AdapterRegistry* registry_;
  std::optional<AdapterRoot> root_;
  bool on_demand_;
  const int32_t max_waiting_;
  std::shared_ptr<adapters::RoomSignal> room_;

  mutable std::mutex mu_;
  std::map<std::string, Pending> pending_;  // task → its load and the requests waiting for it
  std::deque<std::string> parked_;          // tasks waiting for room, first parked first
  int32_t waiting_ = 0;
  uint64_t parks_ = 0;
  bool stopping_ = false;
  std::condition_variable sweep_cv_;
  std::vector<std::unique_ptr<Executor>> workers_;  // loads of different tasks run side by side
  size_t next_worker_ = 0;
  std::thread sweeper_;
};

}  // namespace loraserve::server
