#include "server/wire.h"

#include <gtest/gtest.h>

#include "server/server.h"

namespace loraserve::server {
namespace {

grpc::ByteBuffer to_buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string serialized(const google::protobuf::Message& m) {
  std::string out;
  EXPECT_TRUE(m.SerializeToString(&out));
  return out;
}

TEST(ParseMessage, ParsesAWellFormedRequest) {
  v1::GenerateRequest in;
  in.set_task_id("t1");
  in.set_text("héllo");
  in.mutable_params()->set_max_tokens(7);
  in.mutable_params()->add_stop("é");
  v1::GenerateRequest out;
  Status st = parse_message(to_buffer(serialized(in)), &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(out.task_id(), "t1");
  EXPECT_EQ(out.text(), "héllo");
  EXPECT_EQ(out.params().max_tokens(), 7);
  EXPECT_EQ(out.params().stop(0), "é");
}

TEST(ParseMessage, MalformedUtf8NamesTheField) {
  v1::GenerateRequest in;
  in.set_text(std::string("ab\xff", 3));
  v1::GenerateRequest out;
  Status st = parse_message(to_buffer(serialized(in)), &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "field 'text' is not valid UTF-8");

  v1::GenerateStreamRequest stream;
  stream.mutable_request()->set_text("fine");
  stream.mutable_request()->mutable_params()->add_stop("ok");
  stream.mutable_request()->mutable_params()->add_stop(std::string("\xc3\x28", 2));
  v1::GenerateStreamRequest stream_out;
  st = parse_message(to_buffer(serialized(stream)), &stream_out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "field 'request.params.stop[1]' is not valid UTF-8");

  v1::TokenizeRequest tok;
  tok.set_text(std::string("\xed\xa0\x80", 3));  // a UTF-16 surrogate encoded as UTF-8
  v1::TokenizeRequest tok_out;
  st = parse_message(to_buffer(serialized(tok)), &tok_out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "field 'text' is not valid UTF-8");
}

TEST(ParseMessage, GarbageIsInvalidArgumentNamingTheType) {
  v1::GenerateRequest out;
  Status st = parse_message(to_buffer(std::string("\x0a\xff\xff\xff", 4)), &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("loraserve.v1.GenerateRequest"), std::string::npos) << st.message();
}

TEST(SerializeMessage, RoundTrips) {
  v1::GenerateResponse r;
  r.set_request_id("x");
  r.add_token_ids(5);
  r.set_finish_reason(v1::FINISH_REASON_EOS);
  grpc::ByteBuffer buffer;
  ASSERT_TRUE(serialize_message(r, &buffer).ok());
  v1::GenerateResponse back;
  ASSERT_TRUE(parse_message(buffer, &back).ok());
  EXPECT_EQ(back.request_id(), "x");
  EXPECT_EQ(back.token_ids(0), 5);
  EXPECT_EQ(back.finish_reason(), v1::FINISH_REASON_EOS);
}

TEST(ToEngineParams, AbsentFieldsKeepTheEngineDefaults) {
  const engine::SamplingParams p = to_engine_params(v1::SamplingParams());
  const engine::SamplingParams d;
  EXPECT_FALSE(p.max_tokens.has_value());
  EXPECT_FALSE(p.seed.has_value());
  EXPECT_EQ(p.temperature, d.temperature);
  EXPECT_EQ(p.top_p, d.top_p);
  EXPECT_EQ(p.top_k, d.top_k);
  EXPECT_EQ(p.logprobs, 0);
  EXPECT_FALSE(p.ignore_eos);
}

TEST(ToEngineParams, SetFieldsAreCopiedEvenWhenInvalid) {
  v1::SamplingParams in;
  in.set_max_tokens(0);
  in.set_temperature(-1.5f);
  in.set_top_p(0.25f);
  in.set_top_k(3);
  in.set_seed(42);
  in.set_logprobs(2);
  in.set_ignore_eos(true);
  in.add_stop("END");
  in.add_stop_token_ids(9);
  const engine::SamplingParams p = to_engine_params(in);
  EXPECT_EQ(p.max_tokens, 0);
  EXPECT_EQ(p.temperature, -1.5f);
  EXPECT_EQ(p.top_p, 0.25f);
  EXPECT_EQ(p.top_k, 3);
  EXPECT_EQ(p.seed, 42u);
  EXPECT_EQ(p.logprobs, 2);
  EXPECT_TRUE(p.ignore_eos);
  EXPECT_EQ(p.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(p.stop_token_ids, std::vector<int32_t>{9});
}

TEST(ToGrpc, KeepsCodeAndMessage) {
  const grpc::Status s = to_grpc(not_found_error("unknown task '{}'", "x"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "unknown task 'x'");
  EXPECT_TRUE(to_grpc(ok_status()).ok());
}

TEST(ToGrpc, CutsAMessageLongerThanTheLimit) {
  const std::string echoed(100'000, 'x');
  const grpc::Status s = to_grpc(not_found_error("unknown task '{}'", echoed));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_LE(s.error_message().size(), kMaxStatusMessageBytes + 32);
  EXPECT_NE(s.error_message().find("unknown task"), std::string::npos);
  EXPECT_NE(s.error_message().find("(100015 bytes)"), std::string::npos) << s.error_message();
  const std::string at_limit(kMaxStatusMessageBytes, 'y');
  EXPECT_EQ(to_grpc(internal_error("{}", at_limit)).error_message(), at_limit);
}

TEST(ValidateServeOptions, RefusesRequestLimitsOutOfRange) {
  ServeOptions o;
  o.model_dir = "m";
  EXPECT_TRUE(validate_serve_options(o).ok());
  o.engine.request_limits.max_logprobs = 50;
  const Status st = validate_serve_options(o);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--max-logprobs"), std::string::npos) << st.message();
}

TEST(ToProto, MapsFinishReasons) {
  EXPECT_EQ(to_proto(engine::FinishReason::kLength), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(to_proto(engine::FinishReason::kStop), v1::FINISH_REASON_STOP);
  EXPECT_EQ(to_proto(engine::FinishReason::kEos), v1::FINISH_REASON_EOS);
  EXPECT_EQ(to_proto(engine::FinishReason::kCancelled), v1::FINISH_REASON_CANCELLED);
}

TEST(LoopbackAddress, RecognizesLocalAddresses) {
  EXPECT_TRUE(is_loopback_address("127.0.0.1:50052"));
  EXPECT_TRUE(is_loopback_address("127.1.2.3:1"));
  EXPECT_TRUE(is_loopback_address("localhost:50052"));
  EXPECT_TRUE(is_loopback_address("[::1]:50052"));
  EXPECT_TRUE(is_loopback_address("ipv4:127.0.0.1:5"));
  EXPECT_TRUE(is_loopback_address("unix:/run/loraserve.sock"));
  EXPECT_FALSE(is_loopback_address("0.0.0.0:50052"));
  EXPECT_FALSE(is_loopback_address("[::]:50052"));
  EXPECT_FALSE(is_loopback_address("10.0.0.7:50052"));
  EXPECT_FALSE(is_loopback_address(":50052"));
  EXPECT_FALSE(is_loopback_address("example.com:50052"));
}

TEST(ValidateServeOptions, OpenAdminAddressNeedsAToken) {
  ServeOptions o;
  o.model_dir = "m";
  o.admin_listen = "0.0.0.0:50052";
  Status st = validate_serve_options(o);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("0.0.0.0:50052"), std::string::npos);
  EXPECT_NE(st.message().find("--admin-token"), std::string::npos);
  o.admin_token = "secret";
  EXPECT_TRUE(validate_serve_options(o).ok());
  o.admin_token.clear();
  o.admin_listen = "127.0.0.1:50052";
  EXPECT_TRUE(validate_serve_options(o).ok());
}

TEST(ValidateServeOptions, RefusesSameAddressesAndBadDrainTimeout) {
  ServeOptions o;
  o.model_dir = "m";
  o.admin_listen = o.listen;
  EXPECT_EQ(validate_serve_options(o).code(), StatusCode::kInvalidArgument);
  o.admin_listen = "127.0.0.1:1";
  o.drain_timeout_s = -1;
  EXPECT_EQ(validate_serve_options(o).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loraserve::server
