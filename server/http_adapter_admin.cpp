#include "server/http_adapter_admin.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/untrusted_json.h"

namespace loraserve::server {
namespace {

using json = nlohmann::json;

// The body as a JSON object; INVALID_ARGUMENT (param empty) when it is not one.
Result<json> parse_body(const httplib::Request& req) {
  LS_ASSIGN_OR_RETURN(json body, parse_untrusted_json<json>(req.body, "the request body"));
  if (!body.is_object()) return invalid_argument_error("the request body must be a JSON object");
  return body;
}

// body[key] as a non-empty string into *out; INVALID_ARGUMENT naming it when absent or not one.
Status required_string(const json& body, const char* key, std::string* out) {
  const auto it = body.find(key);
  if (it == body.end() || it->is_null()) return invalid_argument_error("'{}' is required", key);
  if (!it->is_string() || it->get_ref<const std::string&>().empty())
    return invalid_argument_error("'{}' must be a non-empty string", key);
  *out = it->get<std::string>();
  return ok_status();
}

std::string peer_of(const httplib::Request& req) {
  return fmt::format("http:{}:{}", req.remote_addr, req.remote_port);
}

void load_route(AdminService* admin, const httplib::Request& req, httplib::Response& res) {
  auto body = parse_body(req);
  if (!body.ok()) return set_openai_error(res, body.status());
  v1::LoadAdapterRequest request;
  if (Status st = required_string(*body, "lora_name", request.mutable_task_id()); !st.ok())
    return set_openai_error(res, st, "lora_name");
  if (Status st = required_string(*body, "lora_path", request.mutable_path()); !st.ok())
    return set_openai_error(res, st, "lora_path");
  if (const auto it = body->find("load_inplace"); it != body->end() && !it->is_null()) {
    if (!it->is_boolean()) {
      return set_openai_error(res, invalid_argument_error("'load_inplace' must be a boolean"),
                              "load_inplace");
    }
    request.set_replace(it->get<bool>());
  }
  if (const auto it = body->find("base_model_name");
      it != body->end() && !it->is_null() && !it->is_string()) {
    return set_openai_error(res, invalid_argument_error("'base_model_name' must be a string"),
                            "base_model_name");
  }
  v1::AdapterInfo info;
  if (Status st = admin->load_now(request, peer_of(req), &info); !st.ok()) {
    if (st.code() == StatusCode::kAlreadyExists) {  // its message speaks of gRPC's field
      st = already_exists_error(
          "the LoRA adapter '{}' is already loaded; set \"load_inplace\": true to replace it",
          request.task_id());
    }
    return set_openai_error(res, st);
  }
  res.set_content(fmt::format("Success: LoRA adapter '{}' added successfully.", info.task_id()),
                  "text/plain; charset=utf-8");
}

void unload_route(AdminService* admin, const httplib::Request& req, httplib::Response& res) {
  auto body = parse_body(req);
  if (!body.ok()) return set_openai_error(res, body.status());
  v1::UnloadAdapterRequest request;
  std::string task;
  if (Status st = required_string(*body, "lora_name", &task); !st.ok()) {
    // vLLM also unloads by lora_int_id, a number of its own that loraserve has no equivalent of.
    if (body->contains("lora_int_id")) {
      st = invalid_argument_error(
          "'lora_name' is required: loraserve names adapters by task ID, not by lora_int_id");
    }
    return set_openai_error(res, st, "lora_name");
  }
  request.set_task_id(task);
  v1::UnloadAdapterResponse out;
  if (Status st = admin->unload_now(request, peer_of(req), &out); !st.ok())
    return set_openai_error(res, st);
  res.set_content(fmt::format("Success: LoRA adapter '{}' removed successfully.", task),
                  "text/plain; charset=utf-8");
}

}  // namespace

void add_adapter_admin_routes(HttpServer& http, AdminService* admin) {
  http.post("/v1/load_lora_adapter", [admin](const httplib::Request& req, httplib::Response& res) {
    load_route(admin, req, res);
  });
  http.post("/v1/unload_lora_adapter",
            [admin](const httplib::Request& req, httplib::Response& res) {
              unload_route(admin, req, res);
            });
}

}  // namespace loraserve::server
