// Whole models on the CUDA backend (BF16; F16 for the F16 fixture) over the reference fixtures:
// against the PyTorch reference and the CPU backend, mixed-adapter batches against solo runs,
// CUDA graphs against eager launches, and an adapter uploaded while other requests decode.
//
// Bounds. A BF16 emulation of these fixtures in PyTorch (weights and every activation rounded
// where this backend rounds, teacher-forced on the golden tokens) differs from the float64
// reference by up to 0.85 in a logit (per-case RMS up to 0.096; logits reach ±23), by up to 0.18
// in the logprob of the reference's token, and flips greedy tokens where the reference's top-2
// gap is up to 0.14. DESIGN.md's ε = 5e-2 for BF16 is therefore too small against the reference
// on these fixtures: there tokens are compared up to the first gap below kEpsVsReference = 0.25,
// with about twice the emulated error as bounds. Between two GPU runs (solo vs batched) only the
// GEMMs' accumulation order differs (the emulation of that: logits within 0.12), so ε = 5e-2 as
// DESIGN.md says. Graph replay launches the very kernels of an eager step: results bit for bit.
// Measured on an H200 (2026-12-04, 35 cases): against the reference, max |logit diff| 0.876,
// per-case RMS 0.105, max |logprob diff| 0.120, as the emulation predicted; the limits hold them
// with a margin of 2 to 3.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>

#include "engine/engine.h"
#include "engine/loader.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/reference/engine_runner.h"
#include "tests/reference/golden.h"

namespace loraserve::testing {
namespace {

using engine::Engine;

struct Limits {
  double epsilon;      // near-tie threshold of the comparison rule
  double max_logit;    // max |logit difference| over the compared steps
  double rms_logit;    // RMS of the logit differences of one trace
  double max_logprob;  // max |logprob difference| of the compared tokens
};
constexpr Limits kVsReference{0.25, 1.75, 0.25, 0.4};
constexpr Limits kGpuVsGpu{5e-2, 0.3, 0.1, 0.1};

engine::EngineOptions gpu_options() {
  engine::EngineOptions o;
  o.max_batch_size = 16;
  o.max_batched_tokens = 256;
  o.max_lora_rank = 32;
  return o;
}

std::unique_ptr<Engine> open(const std::string& dir, const std::string& device,
                             bool graphs = true) {
  kernels::BackendOptions bo;
  bo.device = device;
  bo.cuda_graphs = graphs;
  auto e = engine::open_engine(dir, bo, gpu_options());
  EXPECT_TRUE(e.ok()) << device << ": " << e.status().to_string();
  return e.ok() ? std::move(*e) : nullptr;
}

Status load_adapters(Engine& e, const GoldenFixture& g) {
  std::set<std::string> loaded;
  for (const GoldenCase& c : g.cases) {
    if (c.adapter && loaded.insert(*c.adapter).second) {
      LS_RETURN_IF_ERROR(e.adapters().load(*c.adapter, g.adapter_dir(c), false).status());
    }
  }
  return ok_status();
}

std::vector<engine::GenerationRequest> requests_of(const GoldenFixture& g) {
  std::vector<engine::GenerationRequest> rs;
  for (const GoldenCase& c : g.cases) {
    rs.push_back(greedy_request(c.prompt_token_ids, static_cast<int32_t>(c.expected.steps()),
                                c.adapter.value_or("")));
  }
  return rs;
}

double rms_logit_diff(const Trace& a, const Trace& b, int steps) {
  double ss = 0;
  size_t n = 0;
  for (int i = 0; i < steps; ++i) {
    const auto& x = a.logits[static_cast<size_t>(i)];
    const auto& y = b.logits[static_cast<size_t>(i)];
    for (size_t j = 0; j < x.size() && j < y.size(); ++j) {
      const double d = static_cast<double>(x[j]) - y[j];
      ss += d * d;
      ++n;
    }
  }
  return n > 0 ? std::sqrt(ss / static_cast<double>(n)) : 0.0;
}

void expect_close(const Trace& want, const Trace& got, const Limits& l, const std::string& what) {
  const Comparison c = compare_traces(want, got, l.epsilon);
  EXPECT_TRUE(c.tokens_match()) << what << ": " << c.mismatch;
  EXPECT_GT(c.compared_logits, 0) << what;
  EXPECT_LE(c.max_logit_diff, l.max_logit) << what;
  EXPECT_LE(c.max_logprob_diff, l.max_logprob) << what;
  const double rms = rms_logit_diff(want, got, c.compared_logits);
  EXPECT_LE(rms, l.rms_logit) << what;
  // The measured errors, for the bounds above (printed whether or not they hold).
  std::printf(
      "%s: %d steps compared; max |logit diff| %.4f (limit %.2f), rms %.4f (limit %.2f), "
      "max |logprob diff| %.4f (limit %.2f)\n",
      what.c_str(), c.compared_logits, c.max_logit_diff, l.max_logit, rms, l.rms_logit,
      c.max_logprob_diff, l.max_logprob);
}

class GpuModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    LS_SKIP_WITHOUT_GPU();
    auto g = load_golden(GetParam());
    ASSERT_TRUE(g.ok()) << g.status().to_string();
    golden_ = std::move(*g);
  }
  GoldenFixture golden_;
};

// Every golden case (base and four adapters), each run alone, against the reference and the CPU.
TEST_P(GpuModelTest, MatchesReferenceAndCpu) {
  auto gpu = open(golden_.model_dir, "cuda");
  auto cpu = open(golden_.model_dir, "cpu");
  ASSERT_TRUE(gpu && cpu);
  ASSERT_TRUE(load_adapters(*gpu, golden_).ok());
  ASSERT_TRUE(load_adapters(*cpu, golden_).ok());
  auto on_gpu = run_alone(*gpu, requests_of(golden_));
  ASSERT_TRUE(on_gpu.ok()) << on_gpu.status().to_string();
  auto on_cpu = run_alone(*cpu, requests_of(golden_));
  ASSERT_TRUE(on_cpu.ok()) << on_cpu.status().to_string();
  for (size_t i = 0; i < golden_.cases.size(); ++i) {
    const GoldenCase& c = golden_.cases[i];
    expect_close(c.expected, (*on_gpu)[i], kVsReference, c.name + ": gpu vs reference");
    expect_close((*on_cpu)[i], (*on_gpu)[i], kVsReference, c.name + ": gpu vs cpu");
  }
}

// All cases in one batch, half of them joining while the others decode, against each alone.
TEST_P(GpuModelTest, MixedAdapterBatchMatchesSolo) {
  auto gpu = open(golden_.model_dir, "cuda");
  ASSERT_TRUE(gpu);
  ASSERT_TRUE(load_adapters(*gpu, golden_).ok());
  auto alone = run_alone(*gpu, requests_of(golden_));
  ASSERT_TRUE(alone.ok()) << alone.status().to_string();
  TraceCollector mixed;
  auto rs = requests_of(golden_);
  const size_t half = rs.size() / 2;
  for (size_t i = 0; i < rs.size(); ++i) {
    if (i == half) {
      for (int s = 0; s < 3; ++s) ASSERT_TRUE(gpu->step().ok());
    }
    ASSERT_TRUE(mixed.submit(*gpu, std::move(rs[i])).ok());
  }
  ASSERT_TRUE(gpu->run_until_idle().ok());
  ASSERT_TRUE(mixed.all_finished().ok()) << mixed.all_finished().to_string();
  for (size_t i = 0; i < golden_.cases.size(); ++i) {
    expect_close((*alone)[i], mixed.trace(i), kGpuVsGpu,
                 golden_.cases[i].name + ": batched vs alone");
  }
}

// Decode steps replayed from CUDA graphs give exactly what launching their ops one by one gives.
TEST_P(GpuModelTest, GraphsReplayDecodeStepsExactly) {
  auto graphs = open(golden_.model_dir, "cuda", true);
  auto eager = open(golden_.model_dir, "cuda", false);
  ASSERT_TRUE(graphs && eager);
  ASSERT_TRUE(load_adapters(*graphs, golden_).ok());
  ASSERT_TRUE(load_adapters(*eager, golden_).ok());
  auto a = run_together(*graphs, requests_of(golden_));
  auto b = run_together(*eager, requests_of(golden_));
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->size(); ++i) {
    const Comparison c = compare_traces((*b)[i], (*a)[i], 0.0);
    EXPECT_TRUE(c.tokens_match()) << golden_.cases[i].name << ": " << c.mismatch;
    EXPECT_EQ(c.max_logit_diff, 0.0) << golden_.cases[i].name;
  }
#ifdef LORASERVE_HAVE_CUDA
  auto with = kernels::cuda_graph_stats(graphs->backend());
  auto without = kernels::cuda_graph_stats(eager->backend());
  ASSERT_TRUE(with.ok() && without.ok());
  EXPECT_GE(with->captured, 1u);
  EXPECT_GE(with->replayed, 20u) << "the 31 decode steps of one batch size should mostly replay";
  EXPECT_EQ(without->captured, 0u);
#endif
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuModelTest, ::testing::ValuesIn(fixture_names()));

TEST(GpuFixturesTest, FixturesArePresent) {
  EXPECT_GE(fixture_names().size(), 5u) << "run the tests from the source root; see "
                                           "tests/reference/README.md";
}

// An adapter loaded and uploaded while base requests decode: they carry on undisturbed, and the
// adapter's request gives what it gives alone.
TEST(GpuUploadTest, AdapterUploadWhileDecoding) {
  LS_SKIP_WITHOUT_GPU();
  auto golden = load_golden("llama_gqa_bf16_llama3rope");
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  auto gpu = open(golden->model_dir, "cuda");
  ASSERT_TRUE(gpu);
  std::vector<const GoldenCase*> base;
  const GoldenCase* lora = nullptr;
  for (const GoldenCase& c : golden->cases) {
    if (!c.adapter) base.push_back(&c);
    if (c.adapter && *c.adapter == "all7_r8") lora = &c;
  }
  ASSERT_GE(base.size(), 2u);
  ASSERT_NE(lora, nullptr);
  std::vector<engine::GenerationRequest> base_requests;
  for (const GoldenCase* c : base) base_requests.push_back(greedy_request(c->prompt_token_ids, 32));
  auto base_alone = run_alone(*gpu, base_requests);
  ASSERT_TRUE(base_alone.ok()) << base_alone.status().to_string();

  TraceCollector traces;
  for (const GoldenCase* c : base)
    ASSERT_TRUE(traces.submit(*gpu, greedy_request(c->prompt_token_ids, 32)).ok());
  for (int s = 0; s < 4; ++s) ASSERT_TRUE(gpu->step().ok());
  ASSERT_TRUE(gpu->adapters().load("all7_r8", golden->adapter_dir(*lora), false).ok());
  const uint64_t loads_before = gpu->stats().adapter_loads;
  auto lora_index = traces.submit(*gpu, greedy_request(lora->prompt_token_ids, 32, "all7_r8"));
  ASSERT_TRUE(lora_index.ok());
  ASSERT_TRUE(gpu->run_until_idle().ok());
  ASSERT_TRUE(traces.all_finished().ok()) << traces.all_finished().to_string();
  EXPECT_GT(gpu->stats().adapter_loads, loads_before);
  for (size_t i = 0; i < base.size(); ++i)
    expect_close((*base_alone)[i], traces.trace(i), kGpuVsGpu,
                 base[i]->name + " across the upload");
  auto lora_alone = run_alone(*gpu, {greedy_request(lora->prompt_token_ids, 32, "all7_r8")});
  ASSERT_TRUE(lora_alone.ok()) << lora_alone.status().to_string();
  expect_close((*lora_alone)[0], traces.trace(*lora_index), kGpuVsGpu, "adapter request");
  expect_close(lora->expected, traces.trace(*lora_index), kVsReference, "adapter vs reference");
}

}  // namespace
}  // namespace loraserve::testing
