// InferenceService: loraserve.v1.Inference over the gRPC callback API. A handler parses the
// request and hands it to a GenerationCall (admission, tokenizing, submitting, the log line: the
// same path HTTP requests take), then returns. The engine thread hands each step's tokens to the
// call's reactor: a stream starts a write when none is in flight (tokens that arrive meanwhile
// travel in the next message), so the step loop never waits on a client; a unary result is
// serialized, and every request's log line written, on the service's writer thread.
// The limits (engine/request_limits.h) are applied before a prompt is tokenized.
// Requests are parsed from raw bytes so that a malformed UTF-8 string is INVALID_ARGUMENT naming
// the field (protobuf's own parser would only fail). Thread-safe; one instance serves every
// call; `state` must outlive it, and it must outlive its gRPC server.
#pragma once

#include <grpcpp/grpcpp.h>

#include "loraserve/v1/inference.grpc.pb.h"
#include "server/executor.h"
#include "server/serving_state.h"

namespace loraserve::server {

using InferenceServiceBase = v1::Inference::WithRawCallbackMethod_Generate<
    v1::Inference::WithRawCallbackMethod_GenerateStream<
        v1::Inference::WithRawCallbackMethod_Tokenize<v1::Inference::Service>>>;

class InferenceService final : public InferenceServiceBase {
 public:
  explicit InferenceService(ServingState* state) : state_(state) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateStream(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;

 private:
  ServingState* state_;
  Executor writer_;
};

}  // namespace loraserve::server
