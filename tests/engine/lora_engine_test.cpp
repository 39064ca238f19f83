// LoRA through the engine: mixed-adapter batches against solo runs, merged weights and the
// PyTorch reference; hot replace / unload with requests in flight; memory returned when the last
// request of an unloaded version ends; requests waiting for a device slot.
#include <gtest/gtest.h>
#include <malloc.h>

#include "engine/engine.h"
#include "engine/loader.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"
#include "tests/kernels/fake_device_backend.h"
#include "tests/reference/engine_runner.h"
#include "tests/reference/golden.h"

namespace loraserve::testing {
namespace {

using engine::Engine;
using engine::EngineOptions;
using formats::Projection;

constexpr double kEps = 1e-3;  // near-tie threshold for fp32 (DESIGN.md)

EngineOptions small_options() {
  EngineOptions o;
  o.max_batch_size = 16;
  o.max_batched_tokens = 256;
  o.max_lora_rank = 32;
  return o;
}

std::unique_ptr<Engine> open(const std::string& dir, EngineOptions o = small_options()) {
  kernels::BackendOptions bo;
  bo.device = "cpu";
  bo.cpu_weight_dtype = DType::kF32;  // the f32 path; weight_dtypes_test has BF16 and I8
  auto e = engine::open_engine(dir, bo, o);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(*e) : nullptr;
}

// Weights of a checkpoint with one adapter merged in: W + scale · B · A for every targeted module.
class MergedSource final : public engine::WeightSource {
 public:
  MergedSource(std::unique_ptr<engine::WeightSource> base, const adapters::LoraAdapter& adapter,
               const formats::ModelConfig& c)
      : base_(std::move(base)), adapter_(adapter), config_(c) {}
  Status read(const std::string& name, const std::vector<int64_t>& shape,
              const std::function<Status(const void*, DType)>& sink) override {
    return base_->read(name, shape, [&](const void* data, DType dtype) -> Status {
      const adapters::LoraModule* m = module_for(name);
      if (m == nullptr || m->rank == 0) return sink(data, dtype);
      const int64_t out = shape[0], in = shape[1];
      std::vector<float> w(static_cast<size_t>(out * in));
      convert_to_f32(dtype, data, w.data(), w.size());
      const auto* base = static_cast<const std::byte*>(adapter_.weights().data());
      std::vector<float> a(static_cast<size_t>(m->rank * in)),
          b(static_cast<size_t>(out * m->rank));
      convert_to_f32(adapter_.dtype(), base + m->a_offset, a.data(), a.size());
      convert_to_f32(adapter_.dtype(), base + m->b_offset, b.data(), b.size());
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t i = 0; i < in; ++i) {
          double acc = 0;
          for (int32_t r = 0; r < m->rank; ++r)
            acc += static_cast<double>(b[o * m->rank + r]) * a[r * in + i];
          w[static_cast<size_t>(o * in + i)] += static_cast<float>(m->scale * acc);
        }
      }
      return sink(w.data(), DType::kF32);
    });
  }
  bool has(const std::string& name) const override { return base_->has(name); }

 private:
  const adapters::LoraModule* module_for(const std::string& name) const {
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      for (Projection p : formats::kAllProjections) {
        if (name == fmt::format("model.layers.{}.{}.{}.weight", l, formats::projection_block(p),
                                formats::projection_name(p))) {
          return &adapter_.module(l, p);
        }
      }
    }
    return nullptr;
  }
  std::unique_ptr<engine::WeightSource> base_;
  const adapters::LoraAdapter& adapter_;
  formats::ModelConfig config_;
};

void expect_same(const Trace& want, const Trace& got, double logit_tol, const std::string& what) {
  Comparison c = compare_traces(want, got, kEps);
  EXPECT_TRUE(c.tokens_match()) << what << ": " << c.mismatch;
  EXPECT_LE(c.max_logit_diff, logit_tol) << what;
  EXPECT_GT(c.compared_logits, 0) << what;
}

class LoraEngineTest : public ::testing::TestWithParam<std::string> {};

// Every golden case of a fixture (base rows and ≥ 4 adapters of different ranks), together in one
// batch with prefill and decode rows mixed, against each run alone and against the reference.
TEST_P(LoraEngineTest, MixedBatchMatchesAloneAndReference) {
  auto golden = load_golden(GetParam());
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  auto eng = open(golden->model_dir);
  ASSERT_NE(eng, nullptr);
  std::set<std::string> loaded;
  for (const auto& c : golden->cases) {
    if (c.adapter && loaded.insert(*c.adapter).second) {
      auto r = eng->adapters().load(*c.adapter, golden->adapter_dir(c), false);
      ASSERT_TRUE(r.ok()) << r.status().to_string();
    }
  }
  ASSERT_GE(loaded.size(), 4u);
  auto requests = [&] {
    std::vector<engine::GenerationRequest> rs;
    for (const auto& c : golden->cases) {
      rs.push_back(greedy_request(c.prompt_token_ids, static_cast<int32_t>(c.expected.steps()),
                                  c.adapter.value_or("")));
    }
    return rs;
  };
  auto alone = run_alone(*eng, requests());
  ASSERT_TRUE(alone.ok()) << alone.status().to_string();
  // Half the requests start, run a few steps (they are decoding), then the rest join.
  TraceCollector mixed;
  auto rs = requests();
  const size_t half = rs.size() / 2;
  for (size_t i = 0; i < half; ++i) ASSERT_TRUE(mixed.submit(*eng, std::move(rs[i])).ok());
  for (int s = 0; s < 3; ++s) ASSERT_TRUE(eng->step().ok());
  for (size_t i = half; i < rs.size(); ++i) ASSERT_TRUE(mixed.submit(*eng, std::move(rs[i])).ok());
  ASSERT_TRUE(eng->run_until_idle().ok());
  ASSERT_TRUE(mixed.all_finished().ok()) << mixed.all_finished().to_string();
  for (size_t i = 0; i < golden->cases.size(); ++i) {
    const auto& c = golden->cases[i];
    expect_same((*alone)[i], mixed.trace(i), 1e-4, c.name + " mixed vs alone");
    expect_same(c.expected, mixed.trace(i), 1e-3, c.name + " vs reference");
  }
}

// LoRA rows equal the model whose weights have the adapter merged in, through the same engine.
TEST_P(LoraEngineTest, MatchesMergedWeights) {
  auto golden = load_golden(GetParam());
  ASSERT_TRUE(golden.ok());
  auto eng = open(golden->model_dir);
  ASSERT_NE(eng, nullptr);
  for (const auto& c : golden->cases) {
    if (!c.adapter) continue;
    auto ref = eng->adapters().load(*c.adapter, golden->adapter_dir(c), /*replace=*/true);
    ASSERT_TRUE(ref.ok()) << ref.status().to_string();
    auto lora = run_alone(*eng, {greedy_request(c.prompt_token_ids, 32, *c.adapter)});
    ASSERT_TRUE(lora.ok());
    auto store = formats::TensorStore::open_folder(golden->model_dir, "model.safetensors");
    ASSERT_TRUE(store.ok());
    MergedSource merged(engine::checkpoint_source(std::move(*store)), *(*ref)->adapter,
                        eng->config());
    auto merged_engine = Engine::create(
        eng->config(), merged, kernels::create_cpu_backend(0, DType::kF32), small_options());
    ASSERT_TRUE(merged_engine.ok()) << merged_engine.status().to_string();
    auto want = run_alone(**merged_engine, {greedy_request(c.prompt_token_ids, 32)});
    ASSERT_TRUE(want.ok());
    expect_same((*want)[0], (*lora)[0], 1e-3, c.name + " vs merged weights");
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LoraEngineTest, ::testing::ValuesIn(fixture_names()));

class LoraLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    eng_ = open("tests/reference/fixtures/llama_mha_f32");
    ASSERT_NE(eng_, nullptr);
    write_adapter(make_adapter_spec(eng_->config(), 8, 1, 0.3f), dir_.path() / "v1");
    write_adapter(make_adapter_spec(eng_->config(), 16, 2, 0.3f), dir_.path() / "v2");
  }
  std::vector<int32_t> prompt(int32_t seed) {
    std::vector<int32_t> p;
    for (int32_t i = 0; i < 12; ++i) p.push_back((seed * 37 + i * 11) % 250 + 3);
    return p;
  }
  // The fixture model on FakeDeviceBackend (uploads land when the test says so); `fake` is set
  // to the backend, which the engine owns.
  static Result<std::unique_ptr<Engine>> open_on_fake_device(FakeDeviceBackend** fake) {
    const std::string dir = "tests/reference/fixtures/llama_mha_f32";
    LS_ASSIGN_OR_RETURN(auto config, formats::load_model_config(dir));
    LS_ASSIGN_OR_RETURN(auto store, formats::TensorStore::open_folder(dir, "model.safetensors"));
    auto source = engine::checkpoint_source(std::move(store));
    auto device = std::make_unique<FakeDeviceBackend>();
    *fake = device.get();
    return Engine::create(config, *source, std::move(device), small_options());
  }
  std::unique_ptr<Engine> eng_;
  TempDir dir_;
};

TEST_F(LoraLifecycleTest, ReplaceAndUnloadNeverDisturbRequestsInFlight) {
  auto& reg = eng_->adapters();
  ASSERT_TRUE(reg.load("task", (dir_.path() / "v1").string(), false).ok());
  auto solo_v1 = run_alone(*eng_, {greedy_request(prompt(1), 24, "task")});
  ASSERT_TRUE(reg.load("task", (dir_.path() / "v2").string(), true).ok());
  auto solo_v2 = run_alone(*eng_, {greedy_request(prompt(1), 24, "task")});
  ASSERT_TRUE(solo_v1.ok() && solo_v2.ok());
  ASSERT_NE((*solo_v1)[0].token_ids, (*solo_v2)[0].token_ids)
      << "the two versions must differ to tell them apart";

  // Back to v1; start two requests, replace with v2 mid-flight, start one more, then unload.
  ASSERT_TRUE(reg.load("task", (dir_.path() / "v1").string(), true).ok());
  TraceCollector c;
  ASSERT_TRUE(c.submit(*eng_, greedy_request(prompt(1), 24, "task")).ok());
  ASSERT_TRUE(c.submit(*eng_, greedy_request(prompt(1), 24, "task")).ok());
  for (int s = 0; s < 4; ++s) ASSERT_TRUE(eng_->step().ok());
  ASSERT_TRUE(reg.load("task", (dir_.path() / "v2").string(), true).ok());
  ASSERT_TRUE(c.submit(*eng_, greedy_request(prompt(1), 24, "task")).ok());
  for (int s = 0; s < 4; ++s) ASSERT_TRUE(eng_->step().ok());
  ASSERT_TRUE(reg.unload("task").ok());
  EXPECT_EQ(eng_->submit(greedy_request(prompt(1), 24, "task")).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(eng_->run_until_idle().ok());
  ASSERT_TRUE(c.all_finished().ok());
  expect_same((*solo_v1)[0], c.trace(0), 1e-4, "in flight across replace");
  expect_same((*solo_v1)[0], c.trace(1), 1e-4, "in flight across replace");
  expect_same((*solo_v2)[0], c.trace(2), 1e-4, "admitted after replace, in flight across unload");
}

TEST_F(LoraLifecycleTest, ARowWhoseLogitsOverflowEndsWithAnErrorAndSparesTheOthers) {
  // Finite values whose branch overflows f32 (1e30 · 1e30): the task's logits are NaN.
  const auto& c = eng_->config();
  std::vector<adapters::LoraModuleWeights> mods;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto [out, in] = formats::projection_shape(c, Projection::kQ);
    adapters::LoraModuleWeights w;
    w.layer = l;
    w.projection = Projection::kQ;
    w.rank = 2;
    w.scale = 1.0f;
    w.a.assign(static_cast<size_t>(2 * in), 1e30f);
    w.b.assign(static_cast<size_t>(out * 2), 1e30f);
    mods.push_back(std::move(w));
  }
  auto huge = adapters::LoraAdapter::from_weights(mods, c, &eng_->backend(), 2);
  ASSERT_TRUE(huge.ok()) << huge.status().to_string();
  ASSERT_TRUE(eng_->adapters().add("huge", *huge, false).ok());
  ASSERT_TRUE(eng_->adapters().load("task", (dir_.path() / "v1").string(), false).ok());
  auto solo =
      run_alone(*eng_, {greedy_request(prompt(2), 12, "task"), greedy_request(prompt(3), 12)});
  ASSERT_TRUE(solo.ok()) << solo.status().to_string();
  for (bool sampled : {false, true}) {
    SCOPED_TRACE(sampled ? "sampled, with logprobs" : "greedy, no logprob asked");
    TraceCollector col;
    engine::GenerationRequest bad = greedy_request(prompt(1), 12, "huge");
    bad.return_logits = false;
    if (sampled) {
      bad.params.temperature = 1.0f;
      bad.params.want_logprob = true;
    } else {
      bad.params.want_logprob = false;
    }
    ASSERT_TRUE(col.submit(*eng_, std::move(bad)).ok());
    ASSERT_TRUE(col.submit(*eng_, greedy_request(prompt(2), 12, "task")).ok());
    ASSERT_TRUE(col.submit(*eng_, greedy_request(prompt(3), 12)).ok());
    ASSERT_TRUE(eng_->run_until_idle().ok());
    ASSERT_TRUE(col.finished(0));
    EXPECT_EQ(col.finish_reason(0), engine::FinishReason::kError);
    EXPECT_EQ(col.error(0).code(), StatusCode::kInternal) << col.error(0).to_string();
    EXPECT_NE(col.error(0).message().find("task 'huge'"), std::string::npos)
        << col.error(0).message();
    EXPECT_NE(col.error(0).message().find("not finite"), std::string::npos)
        << col.error(0).message();
    for (size_t i = 1; i < 3; ++i) {
      ASSERT_TRUE(col.finished(i));
      EXPECT_EQ(col.error(i).code(), StatusCode::kOk) << col.error(i).to_string();
      expect_same((*solo)[i - 1], col.trace(i), 1e-4, "a row beside the overflowing one");
    }
  }
}

TEST_F(LoraLifecycleTest, TemperaturesBelowTheGreedyThresholdDecodeGreedily) {
  ASSERT_TRUE(eng_->adapters().load("task", (dir_.path() / "v1").string(), false).ok());
  auto greedy = run_alone(*eng_, {greedy_request(prompt(4), 16, "task")});
  ASSERT_TRUE(greedy.ok());
  for (float t : {1e-39f, 1e-30f, 9e-6f}) {  // 1e-39: 1 / t is infinite in f32
    SCOPED_TRACE(t);
    engine::GenerationRequest r = greedy_request(prompt(4), 16, "task");
    r.params.temperature = t;
    r.params.seed = 7;
    auto got = run_alone(*eng_, {std::move(r)});
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    EXPECT_EQ((*got)[0].token_ids, (*greedy)[0].token_ids);
  }
}

size_t heap_bytes() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

TEST_F(LoraLifecycleTest, MemoryOfAnUnloadedVersionComesBackWhenItsLastRequestEnds) {
  // A large adapter (≈ 6 MiB of f32) so the heap difference is unmistakable.
  const auto& c = eng_->config();
  std::vector<adapters::LoraModuleWeights> mods;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (Projection p : formats::kAllProjections) {
      const auto [out, in] = formats::projection_shape(c, p);
      adapters::LoraModuleWeights w;
      w.layer = l;
      w.projection = p;
      w.rank = 32;
      w.scale = 0.5f;
      w.a.assign(static_cast<size_t>(32 * in), 0.01f);
      w.b.assign(static_cast<size_t>(out * 32), 0.01f);
      mods.push_back(std::move(w));
    }
  }
  for (int copy = 0; copy < 40; ++copy) {  // 40 tasks share nothing: each copy is its own memory
    auto a = adapters::LoraAdapter::from_weights(mods, c, &eng_->backend(), 32);
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(eng_->adapters().add(fmt::format("big{}", copy), *a, false).ok());
  }
  mods.clear();
  mods.shrink_to_fit();
  const size_t with_adapters = heap_bytes();
  if (with_adapters == 0) {
    GTEST_SKIP() << "mallinfo2 reports no heap under this allocator (a sanitizer's): the memory "
                    "cannot be measured here";
  }
  TraceCollector col;
  for (int copy = 0; copy < 40; ++copy) {
    ASSERT_TRUE(
        col.submit(*eng_, greedy_request(prompt(copy), 20, fmt::format("big{}", copy))).ok());
  }
  for (int s = 0; s < 3; ++s) ASSERT_TRUE(eng_->step().ok());
  for (int copy = 0; copy < 40; ++copy)
    ASSERT_TRUE(eng_->adapters().unload(fmt::format("big{}", copy)).ok());
  // Unloaded but still in flight: the memory is still held.
  EXPECT_GT(heap_bytes() + (1u << 20), with_adapters);
  ASSERT_TRUE(eng_->run_until_idle().ok());
  ASSERT_TRUE(col.all_finished().ok());
  const size_t after = heap_bytes();
  const size_t adapter_bytes =
      40 * (static_cast<size_t>(32 * (c.hidden_size * 10 + c.intermediate_size * 6)) * 4);
  EXPECT_LT(after + adapter_bytes / 2, with_adapters)
      << "heap with adapters " << with_adapters << ", after the last request " << after;
  EXPECT_EQ(eng_->stats().adapter_slots_used, 0);
}

TEST_F(LoraLifecycleTest, RequestsWaitForASlotInsteadOfFailing) {
  EngineOptions o = small_options();
  o.max_device_adapters = 1;
  auto eng = open("tests/reference/fixtures/llama_mha_f32", o);
  ASSERT_NE(eng, nullptr);
  ASSERT_TRUE(eng->adapters().load("a", (dir_.path() / "v1").string(), false).ok());
  ASSERT_TRUE(eng->adapters().load("b", (dir_.path() / "v2").string(), false).ok());
  auto solo =
      run_alone(*eng, {greedy_request(prompt(3), 16, "a"), greedy_request(prompt(4), 16, "b"),
                       greedy_request(prompt(5), 16, "")});
  ASSERT_TRUE(solo.ok());
  TraceCollector c;
  ASSERT_TRUE(c.submit(*eng, greedy_request(prompt(3), 16, "a")).ok());
  ASSERT_TRUE(c.submit(*eng, greedy_request(prompt(4), 16, "b")).ok());
  ASSERT_TRUE(c.submit(*eng, greedy_request(prompt(5), 16, "")).ok());
  ASSERT_TRUE(eng->step().ok());
  const auto stats = eng->stats();
  ASSERT_EQ(stats.waiting_for_adapter.size(), 1u);
  EXPECT_EQ(stats.waiting_for_adapter[0].first, "b");
  EXPECT_EQ(stats.running, 2);  // a and the base-model request run; b waits without blocking them
  ASSERT_TRUE(eng->run_until_idle().ok());
  ASSERT_TRUE(c.all_finished().ok());
  for (size_t i = 0; i < 3; ++i)
    expect_same((*solo)[i], c.trace(i), 1e-4, fmt::format("request {}", i));
  EXPECT_GE(eng->stats().adapter_evictions, 1u);
}

// Uploads that land a while after they start, as on a GPU: a step may find nothing runnable
// because every waiting request's adapter is still uploading, and an upload may be seen to land
// only by the stats' poll at the end of such a step. run_until_idle must wait for the uploads,
// not call either a stall (the first runs on an H200 failed every adapter request so), and the
// answers must equal the CPU backend's. Landing after 1 .. 6 polls covers both cases.
class UploadLatencyTest : public LoraLifecycleTest, public ::testing::WithParamInterface<int> {};

TEST_P(UploadLatencyTest, RequestsWaitForUploadsThatLandLater) {
  FakeDeviceBackend* fake = nullptr;
  auto eng = open_on_fake_device(&fake);
  ASSERT_TRUE(eng.ok()) << eng.status().to_string();
  fake->polls_to_land = GetParam();
  ASSERT_TRUE((*eng)->adapters().load("a", (dir_.path() / "v1").string(), false).ok());
  ASSERT_TRUE((*eng)->adapters().load("b", (dir_.path() / "v2").string(), false).ok());
  ASSERT_TRUE(eng_->adapters().load("a", (dir_.path() / "v1").string(), false).ok());
  ASSERT_TRUE(eng_->adapters().load("b", (dir_.path() / "v2").string(), false).ok());
  const std::vector<engine::GenerationRequest> requests = {greedy_request(prompt(1), 12, "a"),
                                                           greedy_request(prompt(2), 12, "b"),
                                                           greedy_request(prompt(3), 12, "a")};
  auto solo = run_alone(*eng_, requests);
  ASSERT_TRUE(solo.ok());
  TraceCollector c;
  for (const auto& r : requests) ASSERT_TRUE(c.submit(**eng, r).ok());
  const Status run = (*eng)->run_until_idle();
  ASSERT_TRUE(run.ok()) << run.to_string();
  ASSERT_TRUE(c.all_finished().ok()) << c.all_finished().to_string();
  EXPECT_EQ(fake->uploads, 2u);
  for (size_t i = 0; i < requests.size(); ++i)
    expect_same((*solo)[i], c.trace(i), 1e-4, fmt::format("request {}", i));
}

INSTANTIATE_TEST_SUITE_P(PollsToLand, UploadLatencyTest, ::testing::Range(1, 7));

// An adapter whose upload to the device fails: its requests end with the upload's error (they
// never run on a slot of unwritten weights, and never wait forever), requests of the base model
// are undisturbed, and once the device works again the adapter is uploaded afresh.
TEST_F(LoraLifecycleTest, FailedAdapterUploadEndsItsRequestsWithTheError) {
  FakeDeviceBackend* fake = nullptr;
  auto eng = open_on_fake_device(&fake);
  ASSERT_TRUE(eng.ok()) << eng.status().to_string();
  ASSERT_TRUE((*eng)->adapters().load("task", (dir_.path() / "v1").string(), false).ok());
  auto solo = run_alone(*eng_, {greedy_request(prompt(2), 12, "")});
  ASSERT_TRUE(solo.ok());

  fake->fail_all = true;
  TraceCollector c;
  ASSERT_TRUE(c.submit(**eng, greedy_request(prompt(1), 12, "task")).ok());
  ASSERT_TRUE(c.submit(**eng, greedy_request(prompt(1), 12, "task")).ok());
  ASSERT_TRUE(c.submit(**eng, greedy_request(prompt(2), 12, "")).ok());
  ASSERT_TRUE((*eng)->run_until_idle().ok());
  for (size_t i : {0u, 1u}) {
    ASSERT_TRUE(c.finished(i));
    EXPECT_EQ(c.finish_reason(i), engine::FinishReason::kError);
    EXPECT_EQ(c.error(i).code(), StatusCode::kInternal) << c.error(i).to_string();
    EXPECT_NE(c.error(i).message().find("task=task"), std::string::npos) << c.error(i).to_string();
    EXPECT_TRUE(c.trace(i).token_ids.empty()) << "a request ran on a slot that never got weights";
  }
  ASSERT_TRUE(c.finished(2));
  EXPECT_TRUE(c.error(2).ok()) << c.error(2).to_string();
  expect_same((*solo)[0], c.trace(2), 1e-4, "base-model request beside the failed upload");

  fake->fail_all = false;
  fake->land_all = true;
  const uint64_t uploads = fake->uploads;
  TraceCollector again;
  ASSERT_TRUE(again.submit(**eng, greedy_request(prompt(1), 12, "task")).ok());
  ASSERT_TRUE((*eng)->run_until_idle().ok());
  ASSERT_TRUE(again.all_finished().ok()) << again.all_finished().to_string();
  EXPECT_GT(fake->uploads, uploads) << "the adapter must be uploaded afresh";
  ASSERT_TRUE(eng_->adapters().load("task", (dir_.path() / "v1").string(), false).ok());
  auto solo_task = run_alone(*eng_, {greedy_request(prompt(1), 12, "task")});
  ASSERT_TRUE(solo_task.ok());
  expect_same((*solo_task)[0], again.trace(0), 1e-4, "the adapter after a fresh upload");
}

}  // namespace
}  // namespace loraserve::testing
