#include "server/health_service.h"

#include <algorithm>
#include <optional>

namespace loraserve::server {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream: writes the latest status whenever it changes (statuses that change again
// while a write is in flight are collapsed into the newest). Deletes itself in OnDone.
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* service, std::string name) : service_(service), name_(std::move(name)) {}

  // Queues `status` (and, with `last`, the end of the stream).
  void notify(ServingStatus status, bool last) {
    std::unique_lock<std::mutex> lock(mu_);
    next_ = status;
    finish_after_ = finish_after_ || last;
    pump(lock);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) broken_ = true;
    pump(lock);
  }
  void OnCancel() override {
    std::unique_lock<std::mutex> lock(mu_);
    broken_ = true;
    pump(lock);
  }
  void OnDone() override {
    service_->remove(this);
    delete this;
  }

  const std::string& name() const { return name_; }

 private:
  // REQUIRES: `lock` holds mu_; released before calling into gRPC.
  void pump(std::unique_lock<std::mutex>& lock) {
    if (writing_ || finished_) return;
    if (broken_ || (finish_after_ && !next_)) {
      finished_ = true;
      const grpc::Status status =
          broken_ ? grpc::Status(grpc::StatusCode::CANCELLED, "cancelled") : grpc::Status::OK;
      lock.unlock();
      Finish(status);
      return;
    }
    if (!next_ || *next_ == sent_) {
      next_.reset();
      if (finish_after_) pump(lock);
      return;
    }
    out_.set_status(*next_);
    sent_ = *next_;
    next_.reset();
    writing_ = true;
    lock.unlock();
    StartWrite(&out_);
  }

  HealthService* service_;
  const std::string name_;
  std::mutex mu_;
  std::optional<ServingStatus> next_;
  std::optional<ServingStatus> sent_;
  bool writing_ = false;
  bool finish_after_ = false;
  bool finished_ = false;
  bool broken_ = false;
  HealthCheckResponse out_;
};

bool HealthService::known(const std::string& service) const {
  return service.empty() ||
         std::find(services_.begin(), services_.end(), service) != services_.end();
}

HealthService::ServingStatus HealthService::status_of(const std::string& service) const {
  if (!known(service)) return HealthCheckResponse::SERVICE_UNKNOWN;
  return serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

void HealthService::set_serving(bool serving) {
  std::lock_guard<std::mutex> lock(mu_);
  serving_ = serving;
  for (Watcher* w : watchers_) w->notify(status_of(w->name()), /*last=*/false);
}

void HealthService::end_watches() {
  std::lock_guard<std::mutex> lock(mu_);
  ended_ = true;
  for (Watcher* w : watchers_) w->notify(status_of(w->name()), /*last=*/true);
}

void HealthService::remove(Watcher* watcher) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(watcher);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!known(request->service())) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service '" + request->service() + "'"));
    return reactor;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    response->set_status(status_of(request->service()));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext*, const HealthCheckRequest* request) {
  auto* watcher = new Watcher(this, request->service());
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.insert(watcher);
  watcher->notify(status_of(request->service()), /*last=*/ended_);
  return watcher;
}

}  // namespace loraserve::server
