// Fuzzes a GenerateRequest from the wire: the raw bytes parsed as the server parses them
// (server::parse_message), converted to an engine request as the Inference service does (text
// prompts tokenized, sampling fields over the defaults), and submitted to a real engine (the
// demo model, its "reverse" adapter loaded), whose validation refuses what it must. A request the
// engine accepts is cancelled and run to its end. Every refusal is a short, clean message.
#include <grpcpp/support/byte_buffer.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/loader.h"
#include "fuzz/fuzz_util.h"
#include "server/wire.h"

using namespace loraserve;

namespace {

engine::Engine* demo_engine() {
  static engine::Engine* engine = [] {
    kernels::BackendOptions backend;
    backend.device = "cpu";
    backend.cpu_threads = 1;
    engine::EngineOptions options;
    options.max_batch_size = 4;
    options.max_batched_tokens = 64;
    options.kv_cache_bytes = 8 << 20;
    const std::string demo = std::string(LORASERVE_SOURCE_DIR) + "/models/demo";
    auto e = engine::open_engine(demo, backend, options);
    if (!e.ok()) fuzz::fail("cannot open the demo model", e.status().to_string());
    auto loaded = (*e)->adapters().load("reverse", demo + "/adapters/reverse", false);
    if (!loaded.ok()) fuzz::fail("cannot load the demo adapter", loaded.status().to_string());
    return e->release();
  }();
  return engine;
}

// The Inference service's conversion of a parsed request.
Status to_engine_request(const v1::GenerateRequest& in, const engine::Engine& engine,
                         engine::GenerationRequest* out) {
  out->request_id = in.request_id();
  out->task_id = in.task_id();
  switch (in.prompt_case()) {
    case v1::GenerateRequest::kText: {
      auto ids = engine.tokenizer()->encode(in.text(), /*add_special_tokens=*/true);
      if (!ids.ok()) return ids.status();
      out->prompt_token_ids = std::move(ids).value();
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      out->prompt_token_ids.assign(in.token_ids().ids().begin(), in.token_ids().ids().end());
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return invalid_argument_error("prompt is required: set text or token_ids");
  }
  out->params = server::to_engine_params(in.params());
  return ok_status();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  engine::Engine* engine = demo_engine();
  grpc::Slice slice(data, size);
  grpc::ByteBuffer buffer(&slice, 1);
  v1::GenerateRequest request;
  Status parsed = server::parse_message(buffer, &request);
  if (!parsed.ok()) {
    fuzz::check_status(parsed);
    return 0;
  }
  engine::GenerationRequest r;
  Status converted = to_engine_request(request, *engine, &r);
  if (!converted.ok()) {
    fuzz::check_status(converted);
    return 0;
  }
  auto id = engine->submit(std::move(r));
  if (!id.ok()) {
    fuzz::check_status(id.status());
    return 0;
  }
  engine->cancel(*id);
  Status run = engine->run_until_idle();
  if (!run.ok()) fuzz::fail("the engine failed on an accepted request", run.to_string());
  return 0;
}
