// The device slot cache: LRU among unpinned slots, pinned slots never evicted, versions nobody
// holds swept; and, on a backend with its own device memory (a double of the CPU backend whose
// asynchronous uploads can be held back or made to fail), a slot is ready when its upload lands,
// a failed upload is never ready and reports its error, and the slot is emptied once nobody pins
// it, so the adapter is uploaded afresh.
#include "adapters/adapter_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "adapters/registry.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve::adapters {
namespace {

constexpr const char* kModel = "tests/reference/fixtures/llama_mha_f32";

class AdapterCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = *formats::load_model_config(kModel);
    backend_ = kernels::create_cpu_backend(1);
  }
  std::shared_ptr<const LoraAdapter> make(int32_t rank, float value) {
    auto a = testing::q_only_adapter(config_, backend_.get(), rank, value);
    EXPECT_NE(a, nullptr);
    return a;
  }
  formats::ModelConfig config_;
  std::unique_ptr<kernels::Backend> backend_;
};

TEST_F(AdapterCacheTest, CacheEvictsLeastRecentlyUsedUnpinnedSlot) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{8, 64});
  auto a = *reg.add("a", make(4, 0.1f), false);
  auto b = *reg.add("b", make(4, 0.2f), false);
  auto c = *reg.add("c", make(4, 0.3f), false);
  AdapterCache cache(backend_.get(), config_, 2);
  auto sa = cache.acquire(a);
  auto sb = cache.acquire(b);
  ASSERT_TRUE(sa && sb);
  EXPECT_NE(*sa, *sb);
  EXPECT_TRUE(cache.ready(*sa));
  EXPECT_EQ(cache.slice(*sa, lora_table(0, formats::Projection::kQ)).rank, 4);
  EXPECT_EQ(cache.slice(*sa, lora_table(1, formats::Projection::kQ)).rank, 0);
  // Both slots pinned: c must wait, and nothing is evicted.
  EXPECT_FALSE(cache.acquire(c).has_value());
  EXPECT_EQ(cache.counters().evictions, 0u);
  // Unpin a (used before b): c takes a's slot.
  cache.release(*sa);
  auto sc = cache.acquire(c);
  ASSERT_TRUE(sc.has_value());
  EXPECT_EQ(*sc, *sa);
  EXPECT_EQ(cache.counters().evictions, 1u);
  EXPECT_EQ(cache.counters().loads, 3u);
  // b is still resident: acquiring it again is a hit in the same slot.
  cache.release(*sb);
  auto sb2 = cache.acquire(b);
  EXPECT_EQ(sb2, sb);
  EXPECT_EQ(cache.counters().hits, 1u);
}

TEST_F(AdapterCacheTest, SweepFreesVersionsNobodyHolds) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{8, 64});
  AdapterCache cache(backend_.get(), config_, 2);
  std::weak_ptr<const LoraAdapter> weights;
  {
    auto a = *reg.add("a", make(4, 0.1f), false);
    weights = a->adapter;
    auto slot = cache.acquire(a);
    ASSERT_TRUE(slot.has_value());
    cache.release(*slot);
  }
  EXPECT_EQ(cache.slots_used(), 1);
  ASSERT_TRUE(reg.unload("a").ok());
  EXPECT_TRUE(weights.expired());  // the cache holds versions weakly
  cache.sweep();
  EXPECT_EQ(cache.slots_used(), 0);
  EXPECT_TRUE(cache.snapshot().empty());
}

// The CPU backend, except that adapters need a device copy (shares_host_memory() is false) and
// uploads finish only when the test says so, or fail.
class FakeDeviceBackend final : public kernels::Backend {
 public:
  FakeDeviceBackend() : cpu_(kernels::create_cpu_backend(1)) {}

  std::set<uint64_t> landed;  // uploads that have finished
  std::set<uint64_t> failed;  // uploads that failed
  uint64_t uploads = 0;

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
    if (failed.contains(ticket)) return internal_error("fake device: upload {} failed", ticket);
    return landed.contains(ticket);
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

class DeviceAdapterCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { config_ = *formats::load_model_config(kModel); }
  AdapterRef make(AdapterRegistry& reg, const std::string& task) {
    auto a = testing::q_only_adapter(config_, &backend_, 4, 0.25f);
    EXPECT_NE(a, nullptr);
    auto v = reg.add(task, a, false);
    EXPECT_TRUE(v.ok()) << v.status().to_string();
    return *v;
  }
  formats::ModelConfig config_;
  FakeDeviceBackend backend_;
};

TEST_F(DeviceAdapterCacheTest, SlotIsReadyWhenItsUploadLands) {
  AdapterRegistry reg(config_, &backend_, RegistryOptions{8, 64});
  AdapterCache cache(&backend_, config_, 2);
  const AdapterRef a = make(reg, "a");
  const auto slot = cache.acquire(a);
  ASSERT_TRUE(slot.has_value());
  EXPECT_FALSE(cache.ready(*slot));
  EXPECT_TRUE(cache.failure(*slot).ok());
  backend_.landed.insert(backend_.uploads);
  EXPECT_TRUE(cache.ready(*slot));
  EXPECT_EQ(cache.slice(*slot, lora_table(0, formats::Projection::kQ)).rank, 4);
}

TEST_F(DeviceAdapterCacheTest, FailedUploadIsNeverReadyAndIsRetriedOnceUnpinned) {
  AdapterRegistry reg(config_, &backend_, RegistryOptions{8, 64});
  AdapterCache cache(&backend_, config_, 2);
  const AdapterRef a = make(reg, "a");
  const auto slot = cache.acquire(a);
  ASSERT_TRUE(slot.has_value());
  const uint64_t first_upload = backend_.uploads;
  backend_.failed.insert(first_upload);
  EXPECT_FALSE(cache.ready(*slot)) << "a failed upload must not make the slot ready";
  const Status failure = cache.failure(*slot);
  EXPECT_EQ(failure.code(), StatusCode::kInternal);
  EXPECT_NE(failure.message().find("task=a"), std::string::npos) << failure.to_string();
  // A second request for the same adapter while the failed slot is pinned shares its failure.
  const auto again = cache.acquire(a);
  ASSERT_EQ(again, slot);
  EXPECT_FALSE(cache.ready(*again));
  EXPECT_FALSE(cache.failure(*again).ok());
  cache.release(*slot);
  cache.release(*again);
  // Nobody pins it now: the next acquisition uploads the adapter afresh.
  const auto retry = cache.acquire(a);
  ASSERT_TRUE(retry.has_value());
  EXPECT_GT(backend_.uploads, first_upload);
  EXPECT_TRUE(cache.failure(*retry).ok());
  backend_.landed.insert(backend_.uploads);
  EXPECT_TRUE(cache.ready(*retry));
}

}  // namespace
}  // namespace loraserve::adapters
