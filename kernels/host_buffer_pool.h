// Host buffers that evicted adapters gave back, kept for the next load (the CPU backend's
// allocate_host). Loading an adapter writes its whole host buffer once; memory fresh from the OS
// costs a page fault per 4 KiB page on first touch (on virtual machines that hand freed memory
// back to the hypervisor, a second fault there), which was most of an adapter's load time. Once
// the host tier is full, every load on demand follows the eviction of an adapter, usually of the
// same shape, whose buffer then serves it. (The CUDA backend pins its host buffers and does not
// pool them: a buffer may still be the source of an upload when its adapter is freed, and
// cudaFreeHost waits for that.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "common/status.h"

namespace loraserve::kernels {

class HostBufferPool {
 public:
  struct Limits {
    int32_t max_buffers = 4;             // buffers kept at most
    size_t max_bytes = size_t{1} << 30;  // and their bytes at most
  };
  using Allocate = std::function<Result<void*>(size_t bytes)>;
  using Free = std::function<void(void*)>;

  HostBufferPool(Allocate allocate, Free free, Limits limits)
      : allocate_(std::move(allocate)), free_(std::move(free)), limits_(limits) {}
  ~HostBufferPool();  // frees what it keeps; every buffer taken must have been given back
  HostBufferPool(const HostBufferPool&) = delete;
  HostBufferPool& operator=(const HostBufferPool&) = delete;

  // A buffer of at least `bytes`: a kept one of at most 5/4 that size (the smallest such), else
  // a new one from `allocate`.
  Result<void*> take(size_t bytes);
  // Takes back a buffer from take(): kept while the limits allow (the oldest kept goes first),
  // else freed.
  void give_back(void* data);

  int32_t kept_buffers() const;
  size_t kept_bytes() const;

 private:
  const Allocate allocate_;
  const Free free_;
  const Limits limits_;
  mutable std::mutex mu_;
  std::unordered_map<void*, size_t> capacity_;  // every buffer out or kept
  struct Kept {
    void* data;
    size_t capacity;
  };
  std::deque<Kept> kept_;  // oldest first; a few at most
  size_t kept_bytes_ = 0;
};

}  // namespace loraserve::kernels
