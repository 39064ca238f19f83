#include "server/wire.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/excerpt.h"
#include "tokenizer/utf8.h"

namespace loraserve::server {
namespace {

namespace pb = google::protobuf;

// Finds the first string field of `type` in `fields` (a message parsed without its schema) whose
// bytes are not UTF-8, descending into message fields. Returns its path, e.g. "params.stop[1]".
std::string find_malformed_string(const pb::Descriptor* type, const pb::UnknownFieldSet& fields,
                                  const std::string& prefix) {
  for (int i = 0; i < fields.field_count(); ++i) {
    const pb::UnknownField& f = fields.field(i);
    if (f.type() != pb::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const pb::FieldDescriptor* fd = type->FindFieldByNumber(f.number());
    if (fd == nullptr) continue;
    int index = 0;
    for (int j = 0; j < i; ++j) index += fields.field(j).number() == f.number() ? 1 : 0;
    const std::string name = fd->is_repeated() ? fmt::format("{}{}[{}]", prefix, fd->name(), index)
                                               : fmt::format("{}{}", prefix, fd->name());
    if (fd->type() == pb::FieldDescriptor::TYPE_STRING) {
      if (tokenizer::find_invalid_utf8(f.length_delimited())) return name;
    } else if (fd->type() == pb::FieldDescriptor::TYPE_MESSAGE) {
      pb::UnknownFieldSet nested;
      if (!nested.ParseFromString(f.length_delimited())) continue;
      std::string found = find_malformed_string(fd->message_type(), nested, name + ".");
      if (!found.empty()) return found;
    }
  }
  return "";
}

}  // namespace

Status parse_message(const grpc::ByteBuffer& buffer, pb::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return invalid_argument_error("the request could not be read");
  std::string bytes;
  bytes.reserve(buffer.Length());
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (message->ParseFromString(bytes)) return ok_status();
  pb::UnknownFieldSet raw;
  if (raw.ParseFromString(bytes)) {
    const std::string field = find_malformed_string(message->GetDescriptor(), raw, "");
    if (!field.empty()) return invalid_argument_error("field '{}' is not valid UTF-8", field);
  }
  return invalid_argument_error("the request is not a valid {} message",
                                message->GetDescriptor()->full_name());
}

Status serialize_message(const pb::Message& message, grpc::ByteBuffer* buffer) {
  buffer->Clear();
  bool own = false;
  const grpc::Status st = grpc::SerializationTraits<pb::Message>::Serialize(message, buffer, &own);
  if (!st.ok())
    return internal_error("serializing {}: {}", message.GetDescriptor()->full_name(),
                          st.error_message());
  return ok_status();
}

grpc::Status to_grpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const std::string& message = status.message();
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      message.size() <= kMaxStatusMessageBytes
                          ? message
                          : excerpt(message, kMaxStatusMessageBytes));
}

engine::SamplingParams to_engine_params(const v1::SamplingParams& p) {
  engine::SamplingParams out;
  if (p.has_max_tokens()) out.max_tokens = p.max_tokens();
  if (p.has_temperature()) out.temperature = p.temperature();
  if (p.has_top_p()) out.top_p = p.top_p();
  if (p.has_top_k()) out.top_k = p.top_k();
  if (p.has_seed()) out.seed = p.seed();
  if (p.has_logprobs()) out.logprobs = p.logprobs();
  out.want_logprob = p.has_logprobs();  // the response carries logprobs only then
  out.ignore_eos = p.ignore_eos();
  out.stop.assign(p.stop().begin(), p.stop().end());
  out.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  out.include_stop_str_in_output = p.include_stop_str_in_output();
  out.logit_bias.assign(p.logit_bias().begin(), p.logit_bias().end());
  // A map's order is unspecified: sorted, a request's edits do not depend on it.
  std::sort(out.logit_bias.begin(), out.logit_bias.end());
  out.min_tokens = p.min_tokens();
  if (p.has_repetition_penalty()) out.repetition_penalty = p.repetition_penalty();
  out.frequency_penalty = p.frequency_penalty();
  out.presence_penalty = p.presence_penalty();
  out.min_p = p.min_p();
  out.allowed_token_ids.assign(p.allowed_token_ids().begin(), p.allowed_token_ids().end());
  return out;
}

Result<GenerationInput> to_generation_input(const v1::GenerateRequest& in) {
  GenerationInput out;
  out.request_id = in.request_id();
  out.task_id = in.task_id();
  switch (in.prompt_case()) {
    case v1::GenerateRequest::kText:
      out.prompt = in.text();
      break;
    case v1::GenerateRequest::kTokenIds:
      out.prompt = std::vector<int32_t>(in.token_ids().ids().begin(), in.token_ids().ids().end());
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return invalid_argument_error("prompt is required: set text or token_ids");
  }
  out.params = to_engine_params(in.params());
  return out;
}

v1::FinishReason to_proto(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case engine::FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case engine::FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case engine::FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case engine::FinishReason::kNone:
    case engine::FinishReason::kDeadline:
    case engine::FinishReason::kError:
      return v1::FINISH_REASON_UNSPECIFIED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace loraserve::server
