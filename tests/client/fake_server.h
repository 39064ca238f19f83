// A fake loraserve for client tests: Inference and Admin on one loopback port, answering at once
// and recording each call's task and metadata, so that a test sees what a load balancer between
// client and server would see.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "client/client.h"

namespace loraserve::client::fake {

// One call as the fake server saw it: the method and the values of the metadata keys of interest
// (every occurrence, so a key sent twice shows).
struct SeenCall {
  std::string method;
  std::string task_id;  // the task named in the message ("" when none)
  std::vector<std::string> routing_keys;
  std::vector<std::string> authorizations;
  std::string path;      // LoadAdapter's
  bool replace = false;  // LoadAdapter's
};

// Records every call; thread-safe (gRPC runs the handlers on its own threads).
class Recorder {
 public:
  void record(grpc::ServerContext* context, const std::string& method, const std::string& task,
              const std::string& path = "", bool replace = false) {
    SeenCall call{method, task, {}, {}, path, replace};
    for (const auto& [key, value] : context->client_metadata()) {
      const std::string k(key.data(), key.size());
      if (k == kTaskMetadataKey) call.routing_keys.emplace_back(value.data(), value.size());
      if (k == "authorization") call.authorizations.emplace_back(value.data(), value.size());
    }
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(std::move(call));
  }

  std::vector<SeenCall> take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(calls_, {});
  }

 private:
  std::mutex mu_;
  std::vector<SeenCall> calls_;
};

// Inference that answers every call at once: one token, text "x".
class FakeInference final : public v1::Inference::Service {
 public:
  explicit FakeInference(Recorder* recorder) : recorder_(recorder) {}

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        v1::GenerateResponse* response) override {
    recorder_->record(context, "Generate", request->task_id());
    response->set_text("x");
    response->add_token_ids(1);
    return grpc::Status::OK;
  }

  grpc::Status GenerateStream(grpc::ServerContext* context,
                              const v1::GenerateStreamRequest* request,
                              grpc::ServerWriter<v1::GenerateStreamResponse>* writer) override {
    recorder_->record(context, "GenerateStream", request->request().task_id());
    v1::GenerateStreamResponse message;
    message.set_text("x");
    message.add_token_ids(1);
    message.set_finish_reason(v1::FINISH_REASON_LENGTH);
    writer->Write(message);
    return grpc::Status::OK;
  }

  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest*,
                        v1::TokenizeResponse* response) override {
    recorder_->record(context, "Tokenize", "");
    response->add_token_ids(1);
    return grpc::Status::OK;
  }

 private:
  Recorder* recorder_;
};

// Admin that accepts every call, or answers LoadAdapter and UnloadAdapter with the failure set.
class FakeAdmin final : public v1::Admin::Service {
 public:
  explicit FakeAdmin(Recorder* recorder) : recorder_(recorder) {}

  void set_failure(grpc::Status failure) {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = std::move(failure);
  }

  grpc::Status LoadAdapter(grpc::ServerContext* context, const v1::LoadAdapterRequest* request,
                           v1::AdapterInfo* response) override {
    recorder_->record(context, "LoadAdapter", request->task_id(), request->path(),
                      request->replace());
    if (grpc::Status f = failure(); !f.ok()) return f;
    response->set_task_id(request->task_id());
    response->set_path(request->path());
    response->set_version(request->replace() ? 2 : 1);
    return grpc::Status::OK;
  }

  grpc::Status UnloadAdapter(grpc::ServerContext* context, const v1::UnloadAdapterRequest* request,
                             v1::UnloadAdapterResponse* response) override {
    recorder_->record(context, "UnloadAdapter", request->task_id());
    if (grpc::Status f = failure(); !f.ok()) return f;
    response->set_version(1);
    return grpc::Status::OK;
  }

  grpc::Status ListAdapters(grpc::ServerContext* context, const v1::ListAdaptersRequest*,
                            v1::ListAdaptersResponse*) override {
    recorder_->record(context, "ListAdapters", "");
    return grpc::Status::OK;
  }

 private:
  grpc::Status failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }

  Recorder* recorder_;
  std::mutex mu_;
  grpc::Status failure_ = grpc::Status::OK;
};

// The fake services on 127.0.0.1 (a free port), started by the constructor.
class FakeServer {
 public:
  FakeServer() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&inference_);
    builder.RegisterService(&admin_);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() {
    if (server_) server_->Shutdown();
  }

  bool started() const { return server_ != nullptr && port_ > 0; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  Recorder& recorder() { return recorder_; }
  FakeAdmin& admin() { return admin_; }

 private:
  Recorder recorder_;
  FakeInference inference_{&recorder_};
  FakeAdmin admin_{&recorder_};
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace loraserve::client::fake
