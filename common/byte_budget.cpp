#include "common/byte_budget.h"

#include <algorithm>

namespace loraserve {

ByteBudget::Claim& ByteBudget::Claim::operator=(Claim&& o) noexcept {
  if (this != &o) {
    release();
    budget_ = o.budget_;
    bytes_ = o.bytes_;
    o.budget_ = nullptr;
  }
  return *this;
}

void ByteBudget::Claim::release() {
  if (budget_ == nullptr) return;
  budget_->give_back(bytes_);
  budget_ = nullptr;
}

ByteBudget::Claim ByteBudget::claim(size_t bytes) {
  bytes = std::min(bytes, capacity_);
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t ticket = next_ticket_++;
  changed_.wait(lock, [&] { return serving_ == ticket && held_ + bytes <= capacity_; });
  held_ += bytes;
  ++serving_;
  lock.unlock();
  changed_.notify_all();  // the next ticket may fit beside this one
  return Claim(this, bytes);
}

void ByteBudget::give_back(size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    held_ -= bytes;
  }
  changed_.notify_all();
}

size_t ByteBudget::held() const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_;
}

size_t ByteBudget::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(next_ticket_ - serving_);
}

}  // namespace loraserve
