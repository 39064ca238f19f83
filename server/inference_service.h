// InferenceService: loraserve.v1.Inference over the gRPC callback API. A handler admits the call
// and returns; a preparing thread of the service parses the request and hands it to a
// GenerationCall (tokenizing, submitting, the log line: the same path HTTP requests take). The
// engine thread hands each step's tokens to the call's reactor: a stream starts a write when
// none is in flight (tokens that arrive meanwhile travel in the next message), so the step loop
// never waits on a client; a unary result is serialized, and every request's log line written,
// on the service's writer thread.
// Parsing and tokenizing stay off gRPC's threads because they wait for room in the preparing
// budget and take CPU in proportion to the prompt, while gRPC's callback threads also serve
// Health and every other call: 32 prompts of 4 MiB at once held a health check for 3.3 s while
// they ran there.
// A request is held to the engine's RequestLimits (task ID first) before its prompt is tokenized.
// Requests are parsed from raw bytes so that a malformed UTF-8 string is INVALID_ARGUMENT naming
// the field (protobuf's own parser would only fail). Thread-safe; one instance serves every
// call; `state` must outlive it, and it must outlive its gRPC server.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>

#include "loraserve/v1/inference.grpc.pb.h"
#include "server/executor.h"
#include "server/keyed_executor.h"
#include "server/serving_state.h"

namespace loraserve::server {

using InferenceServiceBase = v1::Inference::WithRawCallbackMethod_Generate<
    v1::Inference::WithRawCallbackMethod_GenerateStream<
        v1::Inference::WithRawCallbackMethod_Tokenize<v1::Inference::Service>>>;

class InferenceService final : public InferenceServiceBase {
 public:
  explicit InferenceService(ServingState* state);

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateStream(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;

  // Runs `job` on one of the preparing threads (2 to 8, one per core). Every admitted call may
  // wait there (ServingState::max_calls), so RESOURCE_EXHAUSTED (the job dropped) comes only if
  // the admission count is wrong.
  Status prepare(std::function<void()> job);

 private:
  ServingState* state_;
  Executor writer_;
  std::atomic<uint64_t> prepared_{0};  // the preparing jobs' keys
  // Declared after writer_: destroyed first, its last jobs may still post to the writer.
  KeyedExecutor preparing_;
};

}  // namespace loraserve::server
