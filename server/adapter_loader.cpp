#include "server/adapter_loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace loraserve::server {
namespace {

// Loads of different tasks run side by side on this many threads (a slow disk read does not hold
// up the others); loads of one task are one load.
constexpr int kLoadThreads = 2;

// `message` with the adapter root's path taken out of the file names it mentions, so that an
// error sent to a client names files relative to the root, not where the root lives.
std::string relative_to_root(std::string message, const std::string& root) {
  const std::string prefix = root == "/" ? root : root + "/";
  for (size_t at = message.find(prefix); at != std::string::npos; at = message.find(prefix, at)) {
    message.erase(at, prefix.size());
  }
  return message;
}

}  // namespace

AdapterLoader::AdapterLoader(adapters::AdapterRegistry* registry, std::optional<AdapterRoot> root,
                             bool on_demand)
    : registry_(registry), root_(std::move(root)), on_demand_(on_demand && root_.has_value()) {
  if (!on_demand_) return;
  for (int i = 0; i < kLoadThreads; ++i) workers_.push_back(std::make_unique<Executor>());
}

AdapterLoader::~AdapterLoader() { stop(); }

void AdapterLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  workers_.clear();  // each worker runs the loads queued to it, then joins
}

void AdapterLoader::resolve(const std::string& task_id, Done done) {
  if (task_id.empty()) return done(adapters::AdapterLease());
  adapters::AdapterLease lease = registry_->acquire(task_id);
  if (lease) return done(std::move(lease));
  if (!on_demand_) {
    return done(
        not_found_error("unknown task '{}': no adapter is loaded under that task ID", task_id));
  }
  Status st = adapters::AdapterRegistry::validate_task_id(task_id);
  if (!st.ok()) return done(st);
  if (task_id == "." || task_id == "..") {
    return done(invalid_argument_error(
        "task_id '{}' is not the name of an adapter folder under the adapter root", task_id));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      std::vector<Done>& waiters = loading_[task_id];
      waiters.push_back(std::move(done));
      ++waiting_;
      if (waiters.size() == 1) {  // else its load is under way
        // Posted under the lock, so stop() never destroys a worker a post is about to use.
        workers_[next_worker_++ % workers_.size()]->post([this, task_id] { load(task_id); });
      }
      return;
    }
  }
  done(unavailable_error("the server is shutting down; retry on another replica"));
}

void AdapterLoader::load(const std::string& task_id) {
  Result<adapters::AdapterLease> result = [&]() -> Result<adapters::AdapterLease> {
    auto dir = root_->resolve(task_id);
    if (!dir.ok()) {
      if (dir.status().code() == StatusCode::kNotFound) {
        return not_found_error(
            "unknown task '{}': no adapter is loaded under that task ID, and the adapter root "
            "has no folder of that name",
            task_id);
      }
      if (dir.status().code() == StatusCode::kPermissionDenied) {  // a link leading outside
        return permission_denied_error(
            "task '{}': its folder under the adapter root leads outside the adapter root", task_id);
      }
      return dir.status();
    }
    auto lease = registry_->load_on_demand(task_id, *dir,
                                           adapters::LoadOptions{false, root_->path(), nullptr});
    if (lease.ok() || lease.status().code() == StatusCode::kResourceExhausted) return lease;
    return invalid_argument_error("task '{}': the adapter folder does not load: {}", task_id,
                                  relative_to_root(lease.status().message(), root_->path()));
  }();
  std::vector<Done> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = loading_.find(task_id);
    waiters = std::move(it->second);
    loading_.erase(it);
    waiting_ -= static_cast<int32_t>(waiters.size());
  }
  if (!result.ok()) {
    spdlog::warn("adapter task={} not loaded on demand ({} requests refused): {}", task_id,
                 waiters.size(), result.status().to_string());
  }
  for (size_t i = 0; i < waiters.size(); ++i) {
    // Each request gets a lease of its own (a copy is one more hold).
    waiters[i](i + 1 < waiters.size() ? result : std::move(result));
  }
}

int32_t AdapterLoader::requests_waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_;
}

std::vector<std::string> AdapterLoader::loading_tasks() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  out.reserve(loading_.size());
  for (const auto& [task, waiters] : loading_) out.push_back(task);
  return out;
}

}  // namespace loraserve::server
