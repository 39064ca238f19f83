// AdapterRegistry: task ID → the adapter version currently served for it: the host tier. Load,
// replace and unload are atomic; a request holds the version it was admitted with (an
// AdapterLease), so replacing or unloading never disturbs requests in flight, and a version's
// memory is freed when its last holder lets go. At most `max_adapters` are held: an adapter
// loaded on demand (by a request naming its task) may be evicted to make room, least recently
// used first and never while a request holds it; one loaded explicitly (Admin, --preload) stays
// until it is unloaded. When every slot is taken by adapters that requests hold, a load waits
// for none here: the registry says when room may have freed (RoomSignal), and its caller (the
// server's AdapterLoader) decides who waits. Thread-safe: admin calls and request admission run
// on different threads.
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

// How an adapter came to be served: explicitly (Admin, --preload, built in memory), or on demand
// by the first request that named its task (evictable).
enum class LoadTrigger { kExplicit, kOnDemand };

// Tells that room may have freed in the host tier: an adapter loaded on demand lost its last
// request (it can be evicted now), or one was unloaded. Shared by the registry and the versions
// it hands out, so a lease that ends after the registry is gone still has it. Thread-safe.
class RoomSignal {
 public:
  // Counts the event, then calls the listener (on the thread whose lease ended: keep it short).
  void freed() {
    generation_.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);
    if (listener_) listener_();
  }
  // Grows at every freed(): compare two readings to know whether room may have freed between.
  uint64_t generation() const { return generation_.load(); }
  // Once set to nullptr, the old listener is not running and is never called again.
  void set_listener(std::function<void()> listener) {
    std::lock_guard<std::mutex> lock(mu_);
    listener_ = std::move(listener);
  }

 private:
  std::atomic<uint64_t> generation_{0};
  std::mutex mu_;
  std::function<void()> listener_;
};

// One loaded adapter under its task ID. Immutable but for its counters.
struct AdapterVersion {
  std::string task_id;
  uint64_t version = 0;  // unique across the registry's life; a replacement gets a new one
  std::shared_ptr<const LoraAdapter> adapter;
  std::string source;  // the folder it came from ("" when built in memory)
  LoadTrigger trigger = LoadTrigger::kExplicit;
  std::chrono::system_clock::time_point loaded_at;
  mutable std::atomic<uint64_t> requests_served{0};
  mutable std::atomic<int64_t> in_flight{0};  // leases held (requests admitted and not finished)
  mutable std::atomic<uint64_t> tokens_generated{0};
  mutable std::atomic<uint64_t> last_used{0};  // the registry's clock at the last lease taken
  // Set for a version loaded on demand: told when its last lease ends.
  std::shared_ptr<RoomSignal> room;
};
using AdapterRef = std::shared_ptr<const AdapterVersion>;

// A request's hold on an adapter version: counted in its `in_flight` from the moment the
// registry hands it out until the lease is destroyed, so the version is never evicted under a
// request. Copying takes one more hold. Empty for the base model. Thread-compatible.
class AdapterLease {
 public:
  AdapterLease() = default;
  AdapterLease(const AdapterLease& other) : AdapterLease(other.ref_) {}
  AdapterLease(AdapterLease&& other) noexcept = default;
  AdapterLease& operator=(AdapterLease other) noexcept {
    std::swap(ref_, other.ref_);
    return *this;
  }
  ~AdapterLease() {
    if (ref_ && ref_->in_flight.fetch_sub(1) == 1 && ref_->room) ref_->room->freed();
  }

  explicit operator bool() const { return ref_ != nullptr; }
  const AdapterVersion* operator->() const { return ref_.get(); }
  const AdapterRef& ref() const { return ref_; }

 private:
  friend class AdapterRegistry;
  explicit AdapterLease(AdapterRef ref) : ref_(std::move(ref)) {
    if (ref_) ref_->in_flight.fetch_add(1);
  }
  AdapterRef ref_;
};

// What the registry did, for metrics and logs. Told on the thread that did it, after the fact.
struct RegistryEvent {
  enum class Kind { kLoaded, kLoadFailed, kEvicted, kUnloaded };
  Kind kind = Kind::kLoaded;
  std::string task_id;
  LoadTrigger trigger = LoadTrigger::kExplicit;
  double seconds = 0.0;  // kLoaded, kLoadFailed: how long reading and validating took
};

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

  // Reads the adapter in `dir` and serves it under `task_id` until it is unloaded (never
  // evicted). Without `options.replace`, a task that is already served is ALREADY_EXISTS. When
  // the registry is full, the least recently used adapter loaded on demand that no request holds
  // is evicted; RESOURCE_EXHAUSTED when there is none (room_may_free() says whether waiting
  // helps). On any error the registry is unchanged.
  Result<AdapterRef> load(const std::string& task_id, const std::string& dir,
                          const LoadOptions& options);
  Result<AdapterRef> load(const std::string& task_id, const std::string& dir, bool replace) {
    return load(task_id, dir, LoadOptions{replace, "", nullptr});
  }
  // Loads `dir` under `task_id` for a request and returns that request's lease. When the task
  // got served meanwhile (another load won), returns a lease on that version instead. Evicts as
  // load() does; the adapter itself may be evicted once no request holds it. `options.root`
  // confines the files read as for load(); `options.replace` is ignored. On failure `*no_room`
  // (when given) says whether it was the host tier being full, the one failure that waiting for
  // room can cure (a failed allocation while reading is RESOURCE_EXHAUSTED too).
  Result<AdapterLease> load_on_demand(const std::string& task_id, const std::string& dir,
                                      const LoadOptions& options = {}, bool* no_room = nullptr);
  // Serves an adapter built in memory (tests, benches) under `task_id`.
  Result<AdapterRef> add(const std::string& task_id, std::shared_ptr<const LoraAdapter> adapter,
                         bool replace);
  // Stops serving `task_id` (NOT_FOUND when it is not served). Requests in flight finish on it.
  Status unload(const std::string& task_id);
  // The version served now, or nullptr.
  AdapterRef find(const std::string& task_id) const;
  // A lease on the version served now (empty when none), marking it recently used.
  AdapterLease acquire(const std::string& task_id);
  // Called with every RegistryEvent from now on. REQUIRES: set before any load.
  void set_listener(std::function<void(const RegistryEvent&)> listener) {
    listener_ = std::move(listener);
  }
  std::vector<AdapterRef> list() const;
  size_t size() const;
  // After a RESOURCE_EXHAUSTED load: whether room can free without anyone unloading (a slot is
  // free by now, or an adapter loaded on demand is served: evictable already, or once the
  // requests holding it end), as opposed to a host tier full of explicitly loaded adapters.
  bool room_may_free() const;
  // Told when room may have freed (see RoomSignal); it may outlive the registry.
  std::shared_ptr<RoomSignal> room_signal() const { return room_; }
  const RegistryOptions& options() const { return options_; }
  const formats::ModelConfig& model() const { return model_; }
  kernels::Backend* backend() const { return backend_; }

  // Task IDs are 1 to kMaxTaskIdLength characters of [A-Za-z0-9._:-] (they appear in logs and
  // metric labels).
  static constexpr int32_t kMaxTaskIdLength = 128;
  static Status validate_task_id(const std::string& task_id);

 private:
  Result<AdapterRef> install(const std::string& task_id, std::shared_ptr<const LoraAdapter> adapter,
                             const std::string& source, LoadTrigger trigger,
                             const LoadOptions& options, AdapterLease* lease);
  // Reads and validates the adapter in `dir` (confined to options.root when set).
  Result<std::shared_ptr<const LoraAdapter>> read(const std::string& dir,
                                                  const LoadOptions& options) const;
  // Whether a new task could be added now (room, or an adapter to evict). REQUIRES: mu_ held.
  Status check_room_locked() const;
  // Makes room for one more task by evicting the least recently used evictable adapter;
  // returns it (nullptr when there was room). REQUIRES: mu_ held.
  Result<AdapterRef> make_room_locked();
  void tell(const RegistryEvent& event) const {
    if (listener_) listener_(event);
  }

  formats::ModelConfig model_;
  kernels::Backend* backend_;
  RegistryOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, AdapterRef> served_;
  uint64_t next_version_ = 1;
  uint64_t clock_ = 0;  // ticks at every lease handed out (LRU order)
  std::function<void(const RegistryEvent&)> listener_;
  std::shared_ptr<RoomSignal> room_ = std::make_shared<RoomSignal>();
};

}  // namespace loraserve::adapters
