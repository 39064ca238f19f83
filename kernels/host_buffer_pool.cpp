#include "kernels/host_buffer_pool.h"

#include <spdlog/spdlog.h>

#include <vector>

namespace loraserve::kernels {

HostBufferPool::~HostBufferPool() {
  for (const Kept& k : kept_) free_(k.data);
  if (kept_.size() != capacity_.size()) {
    spdlog::error("host buffer pool: {} buffers were not given back",
                  capacity_.size() - kept_.size());
  }
}

Result<void*> HostBufferPool::take(size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto best = kept_.end();
    for (auto it = kept_.begin(); it != kept_.end(); ++it) {
      if (it->capacity >= bytes && it->capacity - bytes <= bytes / 4 &&
          (best == kept_.end() || it->capacity < best->capacity)) {
        best = it;
      }
    }
    if (best != kept_.end()) {
      void* data = best->data;
      kept_bytes_ -= best->capacity;
      kept_.erase(best);
      return data;
    }
  }
  LS_ASSIGN_OR_RETURN(void* data, allocate_(bytes));
  std::lock_guard<std::mutex> lock(mu_);
  capacity_[data] = bytes;
  return data;
}

void HostBufferPool::give_back(void* data) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = capacity_.find(data);
  if (it == capacity_.end()) {
    spdlog::error("host buffer pool: a buffer it did not hand out was given back");
    return;
  }
  const size_t capacity = it->second;
  if (capacity > limits_.max_bytes || limits_.max_buffers <= 0) {
    capacity_.erase(it);
    lock.unlock();
    free_(data);
    return;
  }
  std::vector<void*> to_free;
  while (!kept_.empty() && (static_cast<int32_t>(kept_.size()) >= limits_.max_buffers ||
                            kept_bytes_ + capacity > limits_.max_bytes)) {
    to_free.push_back(kept_.front().data);
    kept_bytes_ -= kept_.front().capacity;
    capacity_.erase(kept_.front().data);
    kept_.pop_front();
  }
  kept_.push_back({data, capacity});
  kept_bytes_ += capacity;
  lock.unlock();
  for (void* p : to_free) free_(p);
}

int32_t HostBufferPool::kept_buffers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int32_t>(kept_.size());
}

size_t HostBufferPool::kept_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return kept_bytes_;
}

}  // namespace loraserve::kernels
