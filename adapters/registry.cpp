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

Result<AdapterRef> AdapterRegistry::load(const std::string& task_id, const std::string& dir,
                                         const LoadOptions& options) {
  LS_RETURN_IF_ERROR(validate_task_id(task_id));
  const bool replace = options.replace;
  {
    // Fail fast, before reading any file; install() checks again under the lock.
    std::lock_guard<std::mutex> lock(mu_);
    if (!replace && served_.count(task_id)) {
      return already_exists_error(
          "task '{}' is already served (version {}); set replace to swap it", task_id,
          served_.at(task_id)->version);
    }
    if (!served_.count(task_id) && static_cast<int32_t>(served_.size()) >= options_.max_adapters) {
      return resource_exhausted_error(
          "{} adapters are loaded, the limit (--max-host-adapters); unload one first",
          served_.size());
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto folder = Folder::open(dir, options.root);
  if (!folder.ok()) {
    if (folder.status().code() == StatusCode::kNotFound)
      return not_found_error("adapter folder {} does not exist", shown_path(dir));
    return folder.status();
  }
  LS_ASSIGN_OR_RETURN(auto adapter, LoraAdapter::load(*folder, model_, backend_, options_.max_rank,
                                                      options.still_wanted));
  LS_ASSIGN_OR_RETURN(AdapterRef ref, install(task_id, std::move(adapter), dir, options));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info(
      "adapter task={} version={} loaded from {}: ranks {}..{}, modules [{}], {:.1f} KiB, {:.1f} "
      "ms",
      task_id, ref->version, shown_path(dir), ref->adapter->min_rank(), ref->adapter->max_rank(),
      fmt::join(ref->adapter->target_modules(), ","),
      static_cast<double>(ref->adapter->bytes()) / 1024.0, ms);
  return ref;
}

Result<AdapterRef> AdapterRegistry::add(const std::string& task_id,
                                        std::shared_ptr<const LoraAdapter> adapter, bool replace) {
  LS_RETURN_IF_ERROR(validate_task_id(task_id));
  return install(task_id, std::move(adapter), "", LoadOptions{replace, "", nullptr});
}

Result<AdapterRef> AdapterRegistry::install(const std::string& task_id,
                                            std::shared_ptr<const LoraAdapter> adapter,
                                            const std::string& source, const LoadOptions& options) {
  const bool replace = options.replace;
  auto v = std::make_shared<AdapterVersion>();
  v->task_id = task_id;
  v->adapter = std::move(adapter);
  v->source = source;
  v->loaded_at = std::chrono::system_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = served_.find(task_id);
  if (it != served_.end() && !replace) {
    return already_exists_error("task '{}' is already served (version {}); set replace to swap it",
                                task_id, it->second->version);
  }
  if (it == served_.end() && static_cast<int32_t>(served_.size()) >= options_.max_adapters) {
    return resource_exhausted_error(
        "{} adapters are loaded, the limit (--max-host-adapters); unload one first",
        served_.size());
  }
  if (options.still_wanted) LS_RETURN_IF_ERROR(options.still_wanted());
  v->version = next_version_++;
  AdapterRef ref = v;
  served_[task_id] = ref;
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
  return ok_status();
}

AdapterRef AdapterRegistry::find(const std::string& task_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = served_.find(task_id);
  return it == served_.end() ? nullptr : it->second;
}

std::vector<AdapterRef> AdapterRegistry::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<AdapterRef> out;
  for (const auto& [id, ref] : served_) out.push_back(ref);
  return out;
}

size_t AdapterRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return served_.size();
}

}  // namespace loraserve::adapters
