#include "adapters/registry.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/excerpt.h"

namespace loraserve::adapters {

Status AdapterRegistry::validate_task_id(const std::string& id) {
  if (id.empty() || id.size() > static_cast<size_t>(kMaxTaskIdLength)) {
    return invalid_argument_error("task_id must be 1 to {} characters, got {}", kMaxTaskIdLength,
                                  id.size());
  }
  for (char ch : id) {
    const bool ok = std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' ||
                    ch == '-' || ch == ':';
    if (!ok)
      return invalid_argument_error("task_id {} may only hold letters, digits and . _ : -",
                                    excerpt(id));
  }
  return ok_status();
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Status AdapterRegistry::check_room_locked() const {
  if (static_cast<int32_t>(served_.size()) < options_.max_adapters) return ok_status();
  size_t pinned = 0, busy = 0;
  for (const auto& [id, ref] : served_) {
    if (ref->trigger == LoadTrigger::kExplicit) {
      ++pinned;
    } else if (ref->in_flight.load() > 0) {
      ++busy;
    } else {
      return ok_status();  // an evictable one
    }
  }
  return resource_exhausted_error(
      "{} adapters are loaded, the limit (--max-host-adapters), and none can be evicted ({} "
      "loaded by Admin or --preload, {} with requests in flight); unload one or retry",
      served_.size(), pinned, busy);
}

Result<AdapterRef> AdapterRegistry::make_room_locked() {
  if (static_cast<int32_t>(served_.size()) < options_.max_adapters) return AdapterRef();
  LS_RETURN_IF_ERROR(check_room_locked());
  auto victim = served_.end();
  for (auto it = served_.begin(); it != served_.end(); ++it) {
    const AdapterRef& v = it->second;
    if (v->trigger != LoadTrigger::kOnDemand || v->in_flight.load() > 0) continue;
    if (victim == served_.end() || v->last_used.load() < victim->second->last_used.load())
      victim = it;
  }
  AdapterRef evicted = std::move(victim->second);
  served_.erase(victim);
  return evicted;
}

Result<std::shared_ptr<const LoraAdapter>> AdapterRegistry::read(const std::string& dir,
                                                                 const LoadOptions& options) const {
  auto folder = Folder::open(dir, options.root);
  if (!folder.ok()) {
    if (folder.status().code() == StatusCode::kNotFound)
      return not_found_error("adapter folder {} does not exist", shown_path(dir));
    return folder.status();
  }
  LS_ASSIGN_OR_RETURN(auto adapter, LoraAdapter::load(*folder, model_, backend_, options_.max_rank,
                                                      options.still_wanted));
  return std::shared_ptr<const LoraAdapter>(std::move(adapter));
}

Result<AdapterRef> AdapterRegistry::load(const std::string& task_id, const std::string& dir,
                                         const LoadOptions& options) {
  LS_RETURN_IF_ERROR(validate_task_id(task_id));
  {
    // Fail fast, before reading any file; install() checks again under the lock.
    std::lock_guard<std::mutex> lock(mu_);
    if (!options.replace && served_.count(task_id)) {
      return already_exists_error(
          "task '{}' is already served (version {}); set replace to swap it", task_id,
          served_.at(task_id)->version);
    }
    if (!served_.count(task_id)) LS_RETURN_IF_ERROR(check_room_locked());
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto adapter = read(dir, options);
  if (!adapter.ok()) {
    tell({RegistryEvent::Kind::kLoadFailed, task_id, LoadTrigger::kExplicit, seconds_since(t0)});
    return adapter.status();
  }
  LS_ASSIGN_OR_RETURN(AdapterRef ref, install(task_id, std::move(adapter).value(), dir,
                                              LoadTrigger::kExplicit, options, nullptr));
  const double secs = seconds_since(t0);
  spdlog::info(
      "adapter task={} version={} loaded from {}: ranks {}..{}, modules [{}], {:.1f} KiB, {:.1f} "
      "ms",
      task_id, ref->version, shown_path(dir), ref->adapter->min_rank(), ref->adapter->max_rank(),
      fmt::join(ref->adapter->target_modules(), ","),
      static_cast<double>(ref->adapter->bytes()) / 1024.0, secs * 1e3);
  tell({RegistryEvent::Kind::kLoaded, task_id, LoadTrigger::kExplicit, secs});
  return ref;
}

Result<AdapterLease> AdapterRegistry::load_on_demand(const std::string& task_id,
                                                     const std::string& dir,
                                                     const LoadOptions& options, bool* no_room) {
  bool ignored = false;
  if (no_room == nullptr) no_room = &ignored;
  *no_room = false;
  LS_RETURN_IF_ERROR(validate_task_id(task_id));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = served_.find(task_id);
    if (it != served_.end()) {
      it->second->last_used.store(++clock_);
      return AdapterLease(it->second);
    }
    Status room = check_room_locked();
    *no_room = !room.ok();
    LS_RETURN_IF_ERROR(room);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto adapter = read(dir, options);
  if (!adapter.ok()) {
    tell({RegistryEvent::Kind::kLoadFailed, task_id, LoadTrigger::kOnDemand, seconds_since(t0)});
    return adapter.status();
  }
  const std::shared_ptr<const LoraAdapter> ours = std::move(adapter).value();
  LoadOptions install_options = options;
  install_options.replace = false;
  AdapterLease lease;
  auto installed = install(task_id, ours, dir, LoadTrigger::kOnDemand, install_options, &lease);
  if (!installed.ok()) {
    // install() fails only for want of room (the requests holding adapters filled the tier while
    // this one was read) or when options.still_wanted says the load is no longer wanted.
    *no_room = installed.status().code() == StatusCode::kResourceExhausted;
    return installed.status();
  }
  const AdapterRef ref = std::move(installed).value();
  if (ref->adapter != ours) return lease;  // served meanwhile: ours is dropped
  const double secs = seconds_since(t0);
  spdlog::info(
      "adapter task={} version={} loaded on demand from {}: ranks {}..{}, {:.1f} KiB, {:.1f} ms",
      task_id, ref->version, shown_path(dir), ref->adapter->min_rank(), ref->adapter->max_rank(),
      static_cast<double>(ref->adapter->bytes()) / 1024.0, secs * 1e3);
  tell({RegistryEvent::Kind::kLoaded, task_id, LoadTrigger::kOnDemand, secs});
  return lease;
}

Result<AdapterRef> AdapterRegistry::add(const std::string& task_id,
                                        std::shared_ptr<const LoraAdapter> adapter, bool replace) {
  LS_RETURN_IF_ERROR(validate_task_id(task_id));
  return install(task_id, std::move(adapter), "", LoadTrigger::kExplicit,
                 LoadOptions{replace, "", nullptr}, nullptr);
}

Result<AdapterRef> AdapterRegistry::install(const std::string& task_id,
                                            std::shared_ptr<const LoraAdapter> adapter,
                                            const std::string& source, LoadTrigger trigger,
                                            const LoadOptions& options, AdapterLease* lease) {
  auto v = std::make_shared<AdapterVersion>();
  v->task_id = task_id;
  v->adapter = std::move(adapter);
  v->source = source;
  v->trigger = trigger;
  v->loaded_at = std::chrono::system_clock::now();
  if (trigger == LoadTrigger::kOnDemand) v->room = room_;
  AdapterRef evicted;
  AdapterRef ref;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = served_.find(task_id);
    if (it != served_.end() && !options.replace) {
      if (trigger == LoadTrigger::kOnDemand) {  // a request wants any version: the one served
        it->second->last_used.store(++clock_);
        *lease = AdapterLease(it->second);
        return it->second;
      }
      return already_exists_error(
          "task '{}' is already served (version {}); set replace to swap it", task_id,
          it->second->version);
    }
    // Before anything changes: a load whose client gave up never takes effect.
    if (options.still_wanted) LS_RETURN_IF_ERROR(options.still_wanted());
    if (it == served_.end()) {
      LS_ASSIGN_OR_RETURN(evicted, make_room_locked());
    }
    v->version = next_version_++;
    v->last_used.store(++clock_);
    ref = v;
    served_[task_id] = ref;
    if (lease != nullptr) *lease = AdapterLease(ref);
  }
  if (evicted) {
    spdlog::info(
        "adapter task={} version={} evicted from host memory (least recently used; {} loaded)",
        evicted->task_id, evicted->version, options_.max_adapters);
    tell({RegistryEvent::Kind::kEvicted, evicted->task_id, evicted->trigger, 0.0});
  }
  return ref;
}

Status AdapterRegistry::unload(const std::string& task_id) {
  AdapterRef old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = served_.find(task_id);
    if (it == served_.end()) return not_found_error("task {} is not served", excerpt(task_id));
    old = std::move(it->second);
    served_.erase(it);
  }
  spdlog::info("adapter task={} version={} unloaded ({} requests in flight finish on it)", task_id,
               old->version, old->in_flight.load());
  tell({RegistryEvent::Kind::kUnloaded, task_id, old->trigger, 0.0});
  room_->freed();
  return ok_status();
}

AdapterRef AdapterRegistry::find(const std::string& task_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = served_.find(task_id);
  return it == served_.end() ? nullptr : it->second;
}

AdapterLease AdapterRegistry::acquire(const std::string& task_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = served_.find(task_id);
  if (it == served_.end()) return AdapterLease();
  it->second->last_used.store(++clock_);
  return AdapterLease(it->second);
}

std::vector<AdapterRef> AdapterRegistry::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<AdapterRef> out;
  for (const auto& [id, ref] : served_) out.push_back(ref);
  return out;
}

bool AdapterRegistry::room_may_free() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int32_t>(served_.size()) < options_.max_adapters) return true;
  // An adapter loaded on demand is evictable now or once its requests end: its requests may have
  // ended between the failed load and this call, and their room signal may have found nothing
  // parked to retry yet.
  return std::any_of(served_.begin(), served_.end(), [](const auto& entry) {
    return entry.second->trigger == LoadTrigger::kOnDemand;
  });
}

size_t AdapterRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return served_.size();
}

}  // namespace loraserve::adapters
