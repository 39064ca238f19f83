// The adapter routes of the HTTP admin listener (--http-admin-listen), in vLLM's shape
// (vLLM serves them with VLLM_ALLOW_RUNTIME_LORA_UPDATING), which the tools that manage adapters
// on a fleet already speak: the Gateway API Inference Extension's LoRA syncer sidecar, AIBrix,
// KubeAI.
//   POST /v1/load_lora_adapter    {"lora_name": TASK, "lora_path": FOLDER, "load_inplace": BOOL}
//   POST /v1/unload_lora_adapter  {"lora_name": TASK}
// They run as the Admin service's LoadAdapter (lora_path confined to --adapter-root, replace =
// load_inplace) and UnloadAdapter, on its workers. Success is 200 with vLLM's plain-text
// sentence; errors are OpenAI error objects with the HTTP status of the gRPC code (a task
// already served without load_inplace: 409; an unknown one: 404). `base_model_name` is accepted
// and not used (one base model is served, as vLLM ignores a name that is not its base model's);
// unknown fields are ignored. The listener's other routes are /health and /v1/models (the
// sidecar reads both on the same port).
#pragma once

#include "server/admin_service.h"
#include "server/http_server.h"

namespace loraserve::server {

// Adds the two routes. `admin` must outlive `http`'s serving. REQUIRES: before http.start().
void add_adapter_admin_routes(HttpServer& http, AdminService* admin);

}  // namespace loraserve::server
