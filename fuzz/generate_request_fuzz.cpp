// Fuzzes the gRPC generation path up to the engine's queue: wire bytes → GenerateRequest →
// GenerationInput → the engine's request (RequestLimits first, then the prompt tokenized and
// its length checked) → Engine::validate, on the demo model (models/demo). Every refusal is a
// short, clean message; every request the checks accept keeps the limits they promise.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/loader.h"
#include "fuzz/fuzz_util.h"
#include "loraserve/v1/inference.pb.h"
#include "server/generation_call.h"
#include "server/wire.h"

using namespace loraserve;

namespace {

const engine::Engine& demo_engine() {
  static const std::unique_ptr<engine::Engine> engine = [] {
    kernels::BackendOptions backend;
    backend.device = "cpu";
    engine::EngineOptions options;
    auto opened = engine::open_engine(LORASERVE_SOURCE_DIR "/models/demo", backend, options);
    if (!opened.ok()) fuzz::fail("the demo model does not open", opened.status().to_string());
    return std::move(opened).value();
  }();
  return *engine;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const engine::Engine& engine = demo_engine();
  v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto input = server::to_generation_input(request);
  if (!input.ok()) {
    fuzz::check_status(input.status());
    return 0;
  }
  engine::GenerationRequest out;
  Status st = server::to_engine_request(std::move(input).value(), engine, &out);
  if (!st.ok()) {
    fuzz::check_status(st);
    return 0;
  }
  st = engine.validate(out);
  if (!st.ok()) {
    fuzz::check_status(st);
    return 0;
  }
  // What the engine accepted keeps the limits its checks promise.
  const engine::RequestLimits& limits = engine.options().request_limits;
  if (out.prompt_token_ids.empty()) fuzz::fail("an empty prompt was accepted");
  const int64_t vocab = engine.config().vocab_size;
  for (int32_t id : out.prompt_token_ids) {
    if (id < 0 || id >= vocab) fuzz::fail("a prompt id outside the vocabulary was accepted");
  }
  if (out.params.stop.size() > static_cast<size_t>(limits.max_stop_strings)) {
    fuzz::fail("more stop strings than --max-stop-strings were accepted");
  }
  if (out.params.logprobs < 0 || out.params.logprobs > limits.max_logprobs) {
    fuzz::fail("logprobs outside [0, --max-logprobs] accepted");
  }
  // What the sampler trusts: its edits name tokens of the vocabulary, with positive penalties.
  const engine::SamplingParams& p = out.params;
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= vocab || !(bias >= -100.0f && bias <= 100.0f))
      fuzz::fail("a logit_bias outside the vocabulary or [-100, 100] was accepted");
  }
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty) ||
      !(std::fabs(p.frequency_penalty) <= 2.0f) || !(std::fabs(p.presence_penalty) <= 2.0f) ||
      !(p.min_p >= 0.0f && p.min_p <= 1.0f) || p.min_tokens < 0) {
    fuzz::fail("a penalty, min_p or min_tokens outside its range was accepted");
  }
  return 0;
}
