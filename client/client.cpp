#include "client/client.h"

#include <chrono>

namespace loraserve::client {

Status from_grpc(const grpc::Status& status) {
  if (status.ok()) return ok_status();
  return Status(static_cast<StatusCode>(status.error_code()), status.error_message());
}

bool routable_task_id(const std::string& task_id) {
  if (task_id.empty() || task_id.size() > kMaxTaskMetadataBytes) return false;
  for (unsigned char ch : task_id) {
    if (ch < 0x20 || ch > 0x7e) return false;
  }
  return true;
}

void add_task_metadata(grpc::ClientContext* context, const std::string& task_id) {
  if (routable_task_id(task_id)) context->AddMetadata(kTaskMetadataKey, task_id);
}

Client::Client(ClientOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments args;
  // Generated text can be long; the default 4 MiB limit on received messages is kept for
  // requests (the server's side) but lifted here.
  args.SetMaxReceiveMessageSize(-1);
  channel_ = grpc::CreateCustomChannel(options_.address, grpc::InsecureChannelCredentials(), args);
  admin_channel_ =
      grpc::CreateCustomChannel(options_.admin_address, grpc::InsecureChannelCredentials(), args);
  inference_ = v1::Inference::NewStub(channel_);
  admin_ = v1::Admin::NewStub(admin_channel_);
  health_ = grpc::health::v1::Health::NewStub(channel_);
  admin_health_ = grpc::health::v1::Health::NewStub(admin_channel_);
}

void Client::prepare(grpc::ClientContext* context, bool admin, const std::string& task_id) const {
  if (options_.timeout_s > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(options_.timeout_s)));
  }
  if (admin && !options_.admin_token.empty())
    context->AddMetadata("authorization", "Bearer " + options_.admin_token);
  add_task_metadata(context, task_id);
}

Result<v1::GenerateResponse> Client::generate(const v1::GenerateRequest& request) const {
  grpc::ClientContext context;
  prepare(&context, false, request.task_id());
  v1::GenerateResponse response;
  LS_RETURN_IF_ERROR(from_grpc(inference_->Generate(&context, request, &response)));
  return response;
}

Status Client::generate_stream(
    const v1::GenerateRequest& request,
    const std::function<bool(const v1::GenerateStreamResponse&)>& on_message) const {
  grpc::ClientContext context;
  prepare(&context, false, request.task_id());
  v1::GenerateStreamRequest stream_request;
  *stream_request.mutable_request() = request;
  auto reader = inference_->GenerateStream(&context, stream_request);
  v1::GenerateStreamResponse message;
  while (reader->Read(&message)) {
    if (!on_message(message)) {
      context.TryCancel();
      while (reader->Read(&message)) {
      }
      break;
    }
  }
  return from_grpc(reader->Finish());
}

Result<v1::TokenizeResponse> Client::tokenize(const std::string& text,
                                              bool add_special_tokens) const {
  grpc::ClientContext context;
  prepare(&context, false);
  v1::TokenizeRequest request;
  request.set_text(text);
  request.set_add_special_tokens(add_special_tokens);
  v1::TokenizeResponse response;
  LS_RETURN_IF_ERROR(from_grpc(inference_->Tokenize(&context, request, &response)));
  return response;
}

Result<v1::AdapterInfo> Client::load_adapter(const std::string& task_id, const std::string& path,
                                             bool replace) const {
  grpc::ClientContext context;
  prepare(&context, true, task_id);
  v1::LoadAdapterRequest request;
  request.set_task_id(task_id);
  request.set_path(path);
  request.set_replace(replace);
  v1::AdapterInfo response;
  LS_RETURN_IF_ERROR(from_grpc(admin_->LoadAdapter(&context, request, &response)));
  return response;
}

Result<v1::UnloadAdapterResponse> Client::unload_adapter(const std::string& task_id) const {
  grpc::ClientContext context;
  prepare(&context, true, task_id);
  v1::UnloadAdapterRequest request;
  request.set_task_id(task_id);
  v1::UnloadAdapterResponse response;
  LS_RETURN_IF_ERROR(from_grpc(admin_->UnloadAdapter(&context, request, &response)));
  return response;
}

Result<v1::ListAdaptersResponse> Client::list_adapters() const {
  grpc::ClientContext context;
  prepare(&context, true);
  v1::ListAdaptersResponse response;
  LS_RETURN_IF_ERROR(
      from_grpc(admin_->ListAdapters(&context, v1::ListAdaptersRequest(), &response)));
  return response;
}

Result<v1::GetServerInfoResponse> Client::server_info() const {
  grpc::ClientContext context;
  prepare(&context, true);
  v1::GetServerInfoResponse response;
  LS_RETURN_IF_ERROR(
      from_grpc(admin_->GetServerInfo(&context, v1::GetServerInfoRequest(), &response)));
  return response;
}

Result<v1::GetStatsResponse> Client::stats() const {
  grpc::ClientContext context;
  prepare(&context, true);
  v1::GetStatsResponse response;
  LS_RETURN_IF_ERROR(from_grpc(admin_->GetStats(&context, v1::GetStatsRequest(), &response)));
  return response;
}

Result<HealthStatus> Client::health(const std::string& service, bool admin) const {
  grpc::ClientContext context;
  prepare(&context, false);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  auto& stub = admin ? *admin_health_ : *health_;
  LS_RETURN_IF_ERROR(from_grpc(stub.Check(&context, request, &response)));
  return response.status();
}

}  // namespace loraserve::client
