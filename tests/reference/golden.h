// The PyTorch reference's golden outputs for the fixture models (tests/reference/README.md), and
// the comparison rule every test uses (DESIGN.md): tokens are compared step by step up to the
// first step where the reference's top-2 gap is below epsilon; logits and logprobs over the same
// steps. Plain values, no engine: engine_runner.h produces the traces compared here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace loraserve::testing {

// Relative to the source root, where ctest runs every test.
inline constexpr const char* kFixturesDir = "tests/reference/fixtures";

// One greedy continuation: per step, the token, its logprob, and the logits that chose it
// (step 0: the last prompt position). top2_gap is the gap between the two largest logits.
struct Trace {
  std::vector<int32_t> token_ids;
  std::vector<double> logprobs;
  std::vector<double> top2_gap;
  std::vector<std::vector<float>> logits;  // [steps][vocab]

  size_t steps() const { return token_ids.size(); }
};

// Largest minus second-largest value of a row.
double top2_gap(const std::vector<float>& logits);

struct GoldenCase {
  std::string name;                    // "base_0", "all7_r8_0", ...
  std::optional<std::string> adapter;  // folder under <model>/adapters/; nullopt: base model
  std::vector<int32_t> prompt_token_ids;
  Trace expected;
};

struct GoldenFixture {
  std::string model_dir;      // "tests/reference/fixtures/llama_mha_f32"
  std::string name;           // "llama_mha_f32"
  double min_top2_gap = 0.0;  // no step of any case has a smaller reference gap
  std::vector<GoldenCase> cases;

  std::string adapter_dir(const GoldenCase& c) const {
    return model_dir + "/adapters/" + c.adapter.value_or("");
  }
};

// Names of every fixture model folder under kFixturesDir, sorted; empty when there is none.
std::vector<std::string> fixture_names();
// Reads <kFixturesDir>/<name>/golden.json and golden.safetensors.
Result<GoldenFixture> load_golden(const std::string& name);

struct Comparison {
  int compared_tokens = 0;  // steps whose tokens agreed, up to the first near tie or mismatch
  int compared_logits = 0;  // steps whose logits were compared (the context was the same)
  bool near_tie = false;    // stopped at a step whose reference gap is below epsilon
  double max_logit_diff = 0.0;
  double max_logprob_diff = 0.0;
  std::string mismatch;  // empty when every compared token agreed; else what differed first

  bool tokens_match() const { return mismatch.empty(); }
};

// Compares `got` with `ref` as DESIGN.md says. At step i the two runs saw the same context, so
// the logits of step i are compared; then, unless ref's gap at i is below `epsilon` (a near tie
// that rounding may flip: comparison stops there), the tokens must agree, and their logprobs
// are compared. A `got` shorter than `ref` is a mismatch.
Comparison compare_traces(const Trace& ref, const Trace& got, double epsilon);

}  // namespace loraserve::testing
