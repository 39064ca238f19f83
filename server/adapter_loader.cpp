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

Status shutting_down_error() {
  return unavailable_error("the server is shutting down; retry on another replica");
}

}  // namespace

AdapterLoader::AdapterLoader(adapters::AdapterRegistry* registry, std::optional<AdapterRoot> root,
                             bool on_demand, int32_t max_waiting)
    : registry_(registry),
      root_(std::move(root)),
      on_demand_(on_demand && root_.has_value()),
      max_waiting_(std::max(1, max_waiting)),
      room_(registry->room_signal()) {
  if (!on_demand_) return;
  for (int i = 0; i < kLoadThreads; ++i) workers_.push_back(std::make_unique<Executor>());
  room_->set_listener([this] {
    std::lock_guard<std::mutex> lock(mu_);
    retry_parked_locked();
  });
  sweeper_ = std::thread([this] { sweep(); });
}

AdapterLoader::~AdapterLoader() { stop(); }

void AdapterLoader::stop() {
  std::vector<Waiter> refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    // Parked tasks with no load running end now; a running load answers its own requests.
    for (auto it = parked_.begin(); it != parked_.end();) {
      auto p = pending_.find(*it);
      if (p->second.loading) {
        ++it;
        continue;
      }
      for (Waiter& w : p->second.waiters) refused.push_back(std::move(w));
      waiting_ -= static_cast<int32_t>(p->second.waiters.size());
      pending_.erase(p);
      it = parked_.erase(it);
    }
  }
  sweep_cv_.notify_all();
  // No listener runs after this: none posts to a worker being destroyed below.
  if (on_demand_) room_->set_listener(nullptr);
  for (Waiter& w : refused) {
    w.done(shutting_down_error());
  }
  workers_.clear();  // each worker runs the loads queued to it, then joins
  if (sweeper_.joinable()) sweeper_.join();
}

void AdapterLoader::resolve(const std::string& task_id, Done done, Patience patience) {
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
    if (stopping_) {
      st = shutting_down_error();
    } else if (waiting_ >= max_waiting_) {
      st = resource_exhausted_error(
          "{} requests wait for adapters to load already (--max-queue); retry later", waiting_);
    } else {
      auto [it, fresh] = pending_.try_emplace(task_id);
      it->second.waiters.push_back({std::move(done), std::move(patience)});
      ++waiting_;
      if (fresh) post_load_locked(task_id);  // else its load is under way, or it is parked
      return;
    }
  }
  done(st);
}

void AdapterLoader::post_load_locked(const std::string& task_id) {
  pending_.at(task_id).loading = true;
  workers_[next_worker_++ % workers_.size()]->post([this, task_id] { load(task_id); });
}

void AdapterLoader::retry_parked_locked() {
  if (stopping_) return;
  for (const std::string& task : parked_) {
    if (!pending_.at(task).loading) return post_load_locked(task);
  }
}

Result<std::string> AdapterLoader::folder_of(const std::string& task_id) const {
  auto dir = root_->resolve(task_id);
  if (dir.ok()) return dir;
  if (dir.status().code() == StatusCode::kNotFound) {
    return not_found_error(
        "unknown task '{}': no adapter is loaded under that task ID, and the adapter root has no "
        "folder of that name",
        task_id);
  }
  if (dir.status().code() == StatusCode::kPermissionDenied) {  // a link leading outside
    return permission_denied_error(
        "task '{}': its folder under the adapter root leads outside the adapter root", task_id);
  }
  return dir.status();
}

void AdapterLoader::load(const std::string& task_id) {
  auto dir = folder_of(task_id);
  if (!dir.ok()) return finish(task_id, dir.status());
  for (;;) {
    const uint64_t generation = room_->generation();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (pending_.at(task_id).waiters.empty()) {  // every request gave up while it was parked
        forget_locked(task_id);
        return retry_parked_locked();
      }
    }
    // Served meanwhile (by Admin, or by a load of this task that ended after its request looked):
    // nothing to read, nothing to wait for.
    if (adapters::AdapterLease served = registry_->acquire(task_id)) {
      return finish(task_id, std::move(served));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      Pending& p = pending_.at(task_id);
      // A task that has not waited for room yet waits behind those that have.
      if (!p.parked && !parked_.empty() && !stopping_) return park_locked(task_id, &p);
    }
    bool no_room = false;
    auto lease = registry_->load_on_demand(
        task_id, *dir, adapters::LoadOptions{false, root_->path(), nullptr}, &no_room);
    if (lease.ok()) return finish(task_id, std::move(lease));
    if (!no_room) {
      // A failed allocation stays RESOURCE_EXHAUSTED (waiting for room would not cure it); any
      // other failure is the folder's.
      const Status& st = lease.status();
      const StatusCode code = st.code() == StatusCode::kResourceExhausted
                                  ? StatusCode::kResourceExhausted
                                  : StatusCode::kInvalidArgument;
      return finish(
          task_id,
          Status(code, fmt::format("task '{}': the adapter folder does not load: {}", task_id,
                                   relative_to_root(st.message(), root_->path()))));
    }
    // No room: every adapter is held by requests (or loaded by Admin / --preload).
    if (!registry_->room_may_free()) return finish(task_id, lease.status());
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
      // Room freed since this try began: its signal found nothing parked to retry.
      if (room_->generation() != generation) continue;
      return park_locked(task_id, &pending_.at(task_id));
    }
  }
  finish(task_id, shutting_down_error());
}

void AdapterLoader::park_locked(const std::string& task_id, Pending* p) {
  p->loading = false;
  if (p->parked) return;  // keeps its place
  p->parked = true;
  parked_.push_back(task_id);
  ++parks_;
  spdlog::info(
      "adapter task={} waits for room in host memory (--max-host-adapters {}: every adapter is "
      "held by requests); {} requests wait for it, {} tasks parked",
      task_id, registry_->options().max_adapters, p->waiters.size(), parked_.size());
  sweep_cv_.notify_all();
}

void AdapterLoader::forget_locked(const std::string& task_id) {
  if (pending_.at(task_id).parked)
    parked_.erase(std::find(parked_.begin(), parked_.end(), task_id));
  pending_.erase(task_id);
}

void AdapterLoader::finish(const std::string& task_id, Result<adapters::AdapterLease> result) {
  std::vector<Waiter> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiters = std::move(pending_.at(task_id).waiters);
    forget_locked(task_id);
    waiting_ -= static_cast<int32_t>(waiters.size());
    // The next parked task, when this one leaves room (or failed and took none).
    retry_parked_locked();
  }
  if (!result.ok()) {
    spdlog::warn("adapter task={} not loaded on demand ({} requests refused): {}", task_id,
                 waiters.size(), result.status().to_string());
  }
  for (size_t i = 0; i < waiters.size(); ++i) {
    // Each request gets a lease of its own (a copy is one more hold).
    waiters[i].done(i + 1 < waiters.size() ? result : std::move(result));
  }
}

void AdapterLoader::sweep() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (parked_.empty()) {
      sweep_cv_.wait(lock, [&] { return stopping_ || !parked_.empty(); });
      continue;
    }
    if (sweep_cv_.wait_for(lock, kSweepPeriod, [&] { return stopping_; })) break;
    const auto now = Clock::now();
    std::vector<std::pair<Done, Status>> answers;
    for (auto t = parked_.begin(); t != parked_.end();) {
      Pending& p = pending_.at(*t);
      for (auto w = p.waiters.begin(); w != p.waiters.end();) {
        Status why;
        // Answered once the deadline has passed, never before (the engine's slack classifies
        // cancels that arrive near a deadline; nothing here races a client's deadline).
        if (w->patience.deadline && *w->patience.deadline <= now) {
          why = deadline_exceeded_error(
              "the deadline passed while the request waited for room in host memory to load "
              "task '{}' (--max-host-adapters {}, every adapter held by requests)",
              *t, registry_->options().max_adapters);
        } else if (w->patience.abandoned && w->patience.abandoned()) {
          why = cancelled_error("the request was cancelled while it waited to load task '{}'", *t);
        }
        if (why.ok()) {
          ++w;
          continue;
        }
        answers.emplace_back(std::move(w->done), std::move(why));
        w = p.waiters.erase(w);
      }
      if (p.waiters.empty() && !p.loading) {
        pending_.erase(*t);
        t = parked_.erase(t);
      } else {
        ++t;
      }
    }
    waiting_ -= static_cast<int32_t>(answers.size());
    if (answers.empty()) continue;
    lock.unlock();
    for (auto& [done, why] : answers) done(std::move(why));
    answers.clear();  // what the callbacks hold ends outside the lock (a lease's end takes it)
    lock.lock();
  }
}

int32_t AdapterLoader::requests_waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_;
}

std::vector<std::string> AdapterLoader::loading_tasks() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  out.reserve(pending_.size());
  for (const auto& [task, pending] : pending_) out.push_back(task);
  return out;
}

int32_t AdapterLoader::tasks_parked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int32_t>(parked_.size());
}

uint64_t AdapterLoader::parks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return parks_;
}

}  // namespace loraserve::server
