// The edge between gRPC and the rest of the server: byte buffers to proto messages (with errors
// that name a malformed field), proto messages to GenerationInput and engine structs and back,
// and Status to grpc::Status. Stateless functions; thread-safe.
#pragma once

#include <google/protobuf/message.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include "common/status.h"
#include "engine/request.h"
#include "loraserve/v1/inference.pb.h"
#include "server/generation_call.h"

namespace loraserve::server {

// Parses `buffer` into `message`. A message that does not parse is INVALID_ARGUMENT; when the
// cause is a string field holding malformed UTF-8, the message names that field.
Status parse_message(const grpc::ByteBuffer& buffer, google::protobuf::Message* message);
// Serializes `message` into `buffer`, replacing what it held.
// REQUIRES: no write of `buffer` is in flight.
Status serialize_message(const google::protobuf::Message& message, grpc::ByteBuffer* buffer);

// The longest status message sent. Messages name what they refuse with short excerpts; this cut
// is the last guard that an error stays far below gRPC's 8 KiB metadata limit even
// percent-encoded (3 bytes per byte), so it never reaches the client as RESOURCE_EXHAUSTED.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// The same code; the message cut to kMaxStatusMessageBytes (an excerpt) when longer.
grpc::Status to_grpc(const Status& status);

// The sampling fields that were set, over the engine's defaults; nothing is validated here
// (the engine does, naming the field).
engine::SamplingParams to_engine_params(const v1::SamplingParams& params);

// The request as the transport-independent GenerationCall takes it (no deadline: that is the
// call's). INVALID_ARGUMENT when no prompt is set.
Result<GenerationInput> to_generation_input(const v1::GenerateRequest& request);

v1::FinishReason to_proto(engine::FinishReason reason);

// Appends `token` to `token_ids`, and to `logprobs` when `with_logprobs`.
template <typename Response>
void append_token(const engine::GeneratedToken& token, bool with_logprobs, Response* response) {
  response->add_token_ids(token.token_id);
  if (!with_logprobs) return;
  v1::Logprob* lp = response->add_logprobs();
  lp->set_token_id(token.token_id);
  lp->set_logprob(token.logprob);
  for (const auto& alt : token.top) {
    v1::TokenLogprob* t = lp->add_top();
    t->set_token_id(alt.token_id);
    t->set_logprob(alt.logprob);
  }
}

// Fills finish_reason, usage and timing.
template <typename Response>
void set_summary(const SequenceSummary& s, Response* response) {
  response->set_finish_reason(to_proto(s.finish_reason));
  response->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(s.prompt_tokens));
  response->mutable_usage()->set_completion_tokens(static_cast<uint32_t>(s.completion_tokens));
  response->mutable_timing()->set_queue_ms(s.queue_ms);
  response->mutable_timing()->set_time_to_first_token_ms(s.ttft_ms);
  response->mutable_timing()->set_total_ms(s.total_ms);
  response->mutable_timing()->set_adapter_load_ms(s.adapter_load_ms);
}

}  // namespace loraserve::server
