// A test double of a backend with its own device memory: the CPU backend, except that adapters
// need a device copy (shares_host_memory() is false) and asynchronous uploads finish only when
// the test says so (or after a set number of polls), or fail. Not thread-safe (the engine thread,
// or the test's).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

namespace loraserve::testing {

class FakeDeviceBackend final : public kernels::Backend {
 public:
  FakeDeviceBackend() : cpu_(kernels::create_cpu_backend(1)) {}

  std::set<uint64_t> landed;  // uploads that have finished
  std::set<uint64_t> failed;  // uploads that failed
  bool land_all = false;      // every upload has finished
  bool fail_all = false;      // every upload fails
  uint64_t uploads = 0;       // uploads started (the last ticket)
  // An upload lands once upload_done has been asked this many times about it (a real device's
  // upload runs a while after the call that started it); 0 leaves landing to `landed`/`land_all`.
  int polls_to_land = 0;
  std::map<uint64_t, int> polls;  // upload_done calls per ticket

  std::string describe() const override { return "fake device"; }
  std::string kind() const override { return "fake"; }
  DType weight_dtype(DType d) const override { return cpu_->weight_dtype(d); }
  DType activation_dtype() const override { return cpu_->activation_dtype(); }
  size_t available_memory() const override { return cpu_->available_memory(); }
  kernels::MemoryHeadroom memory_headroom() const override { return cpu_->memory_headroom(); }
  bool shares_host_memory() const override { return false; }
  Result<kernels::DeviceBuffer> allocate(size_t bytes) override {
    void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
    if (p == nullptr) return resource_exhausted_error("fake device: out of memory");
    return kernels::DeviceBuffer(this, p, bytes);
  }
  void free(void* data) override { std::free(data); }
  Result<kernels::DeviceBuffer> allocate_host(size_t bytes) override {
    return cpu_->allocate_host(bytes);
  }
  void free_host(void* data) override { cpu_->free_host(data); }
  Status copy_to_device(const kernels::Tensor& dst, const void* src, DType src_dtype,
                        size_t n) override {
    return cpu_->copy_to_device(dst, src, src_dtype, n);
  }
  Result<uint64_t> copy_to_device_async(const kernels::Tensor& dst, const void* src,
                                        DType src_dtype, size_t n) override {
    LS_RETURN_IF_ERROR(cpu_->copy_to_device(dst, src, src_dtype, n));
    return ++uploads;
  }
  Result<bool> upload_done(uint64_t ticket) override {
    if (fail_all || failed.contains(ticket))
      return internal_error("fake device: upload {} failed", ticket);
    if (polls_to_land > 0 && ++polls[ticket] >= polls_to_land) landed.insert(ticket);
    return land_all || landed.contains(ticket);
  }
  Status copy_to_host(const kernels::Tensor& src, float* dst) override {
    return cpu_->copy_to_host(src, dst);
  }
  Status synchronize() override { return ok_status(); }
  Status begin_step(const kernels::StepMeta& m) override { return cpu_->begin_step(m); }
  Status embedding(const kernels::Tensor& t, const kernels::Tensor& o) override {
    return cpu_->embedding(t, o);
  }
  Status matmul(const kernels::Tensor& x, const kernels::Tensor& w, const kernels::Tensor& y,
                bool acc) override {
    return cpu_->matmul(x, w, y, acc);
  }
  Status add_bias(const kernels::Tensor& y, const kernels::Tensor& b) override {
    return cpu_->add_bias(y, b);
  }
  Status rms_norm(const kernels::Tensor& x, const kernels::Tensor& w, float eps,
                  const kernels::Tensor& o) override {
    return cpu_->rms_norm(x, w, eps, o);
  }
  Status add_rms_norm(const kernels::Tensor& r, const kernels::Tensor& x, const kernels::Tensor& w,
                      float eps, const kernels::Tensor& o) override {
    return cpu_->add_rms_norm(r, x, w, eps, o);
  }
  Status head_rms_norm(const kernels::Tensor& x, int32_t hd, const kernels::Tensor& w,
                       float eps) override {
    return cpu_->head_rms_norm(x, hd, w, eps);
  }
  Status rope(const kernels::Tensor& x, int32_t hd, const kernels::Tensor& f) override {
    return cpu_->rope(x, hd, f);
  }
  Status write_kv(const kernels::Tensor& k, const kernels::Tensor& v, const kernels::Tensor& kc,
                  const kernels::Tensor& vc) override {
    return cpu_->write_kv(k, v, kc, vc);
  }
  Status attention(const kernels::Tensor& q, const kernels::Tensor& kc, const kernels::Tensor& vc,
                   const kernels::AttentionShape& s, const kernels::Tensor& o) override {
    return cpu_->attention(q, kc, vc, s, o);
  }
  Status silu_mul(const kernels::Tensor& g, const kernels::Tensor& o) override {
    return cpu_->silu_mul(g, o);
  }
  Status gather_logits_rows(const kernels::Tensor& x, const kernels::Tensor& o) override {
    return cpu_->gather_logits_rows(x, o);
  }
  Status lora_shrink(const kernels::Tensor& x, std::span<const int32_t> t,
                     const kernels::Tensor& tmp) override {
    return cpu_->lora_shrink(x, t, tmp);
  }
  Status lora_expand(const kernels::Tensor& tmp, std::span<const int32_t> t,
                     std::span<const kernels::Tensor> o) override {
    return cpu_->lora_expand(tmp, t, o);
  }
  Status sample(const kernels::Tensor& l, std::span<const kernels::SampleParams> p,
                std::vector<kernels::SampleResult>* r) override {
    return cpu_->sample(l, p, r);
  }

 private:
  std::unique_ptr<kernels::Backend> cpu_;
};

}  // namespace loraserve::testing
