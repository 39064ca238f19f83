// The HTTP admin listener of a real `loraserve serve` (--http-admin-listen, with an admin token):
// vLLM's adapter routes as the Gateway API Inference Extension's LoRA syncer sidecar calls them
// (load, load_inplace, unload), /health and /v1/models beside them; an adapter loaded there
// answers on the public HTTP listener exactly as the same folder preloaded under another task ID;
// every refusal as its HTTP status and OpenAI's error object naming the field; the token; and
// the routes only on their own listener.
#include <gtest/gtest.h>

#include <set>

#include "tests/integration/http_client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

using json = nlohmann::json;

constexpr const char* kToken = "admin-secret";

class HttpAdapterAdminTest : public ServerSuite<HttpAdapterAdminTest> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const fs::path model = dir_->path() / "fixture-model";
    make_model_with_tokenizer(model);
    root_ = dir_->path() / "adapters";
    tasks_ = make_adapter_root(root_, 2);
    std::vector<std::string> args = {
        "--model", model.string(),        "--adapter-root", root_.string(),       "--admin-token",
        kToken,    "--http-admin-listen", "127.0.0.1:0",    "--no-load-on-demand"};
    for (const std::string& t : tasks_) {
      args.push_back("--preload");
      args.push_back(t + "=" + (root_ / t).string());
    }
    start_suite_server(args, kToken);
  }

  static HttpClient admin() { return HttpClient(server_->http_admin_address(), kToken); }
  static HttpClient public_http() { return HttpClient(server_->http_address()); }

  // Greedy tokens and their logprobs for `model` on the public listener.
  static json answer(const std::string& model) {
    const HttpReply r = public_http().post("/v1/completions", {{"model", model},
                                                               {"prompt", "the quick brown fox"},
                                                               {"max_tokens", 6},
                                                               {"temperature", 0},
                                                               {"logprobs", 1},
                                                               {"return_token_ids", true}});
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) return json();
    return {r.json["choices"][0]["token_ids"], r.json["choices"][0]["logprobs"]["token_logprobs"]};
  }

  static std::set<std::string> model_ids(const HttpClient& http) {
    const HttpReply r = http.get("/v1/models");
    EXPECT_EQ(r.status, 200) << r.body;
    std::set<std::string> ids;
    for (const json& m : r.json["data"]) ids.insert(m["id"].get<std::string>());
    return ids;
  }

  static inline fs::path root_;
  static inline std::vector<std::string> tasks_;
};

TEST_F(HttpAdapterAdminTest, LoadReplaceAndUnloadAsTheLoraSidecarDoes) {
  ASSERT_FALSE(server_->http_admin_address().empty());
  // The sidecar's health check needs no token.
  EXPECT_EQ(HttpClient(server_->http_admin_address()).get("/health").status, 200);
  const json t0 = answer(tasks_[0]), t1 = answer(tasks_[1]);
  ASSERT_NE(t0, t1) << "the two fixture adapters must answer differently for this test to tell "
                       "which folder was loaded";

  // Load, with the fields the sidecar sends (base_model_name is accepted and not used).
  HttpReply r = admin().post(
      "/v1/load_lora_adapter",
      {{"lora_name", "fresh"}, {"lora_path", tasks_[0]}, {"base_model_name", "some/base-model"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "Success: LoRA adapter 'fresh' added successfully.");
  EXPECT_TRUE(r.content_type.starts_with("text/plain")) << r.content_type;
  EXPECT_EQ(answer("fresh"), t0);
  const std::set<std::string> served = {"fixture-model", tasks_[0], tasks_[1], "fresh"};
  EXPECT_EQ(model_ids(admin()), served);
  EXPECT_EQ(model_ids(public_http()), served);
  const HttpReply listed = admin().get("/v1/models/fresh");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(listed.json["parent"], "fixture-model");

  // Again under the same name: 409 unless load_inplace; with it, the other folder's adapter.
  r = admin().post("/v1/load_lora_adapter", {{"lora_name", "fresh"}, {"lora_path", tasks_[1]}});
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.json["error"]["message"].get<std::string>().find("load_inplace"), std::string::npos)
      << r.body;
  EXPECT_EQ(answer("fresh"), t0);
  r = admin().post("/v1/load_lora_adapter",
                   {{"lora_name", "fresh"},
                    {"lora_path", (root_ / tasks_[1]).string()},  // absolute, inside the root
                    {"load_inplace", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(answer("fresh"), t1);

  // Unload: gone from both listeners' lists and from serving; a second unload is 404.
  r = admin().post("/v1/unload_lora_adapter", {{"lora_name", "fresh"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "Success: LoRA adapter 'fresh' removed successfully.");
  EXPECT_EQ(model_ids(public_http()),
            (std::set<std::string>{"fixture-model", tasks_[0], tasks_[1]}));
  const HttpReply gone = public_http().post(
      "/v1/completions", {{"model", "fresh"}, {"prompt", "x"}, {"max_tokens", 1}});
  EXPECT_EQ(gone.status, 404) << gone.body;
  r = admin().post("/v1/unload_lora_adapter", {{"lora_name", "fresh"}});
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(r.json["error"]["type"], "invalid_request_error");
  // The preloaded adapters are untouched.
  EXPECT_EQ(answer(tasks_[0]), t0);
  EXPECT_EQ(answer(tasks_[1]), t1);
}

TEST_F(HttpAdapterAdminTest, RefusalsNameTheFieldAndChangeNothing) {
  struct Case {
    std::string path;
    std::string body;  // raw
    int status;
    std::string param;    // expected error.param ("" → null)
    std::string message;  // a part of error.message
  };
  const std::string outside = (dir_->path() / "fixture-model").string();
  const std::vector<Case> cases = {
      {"/v1/load_lora_adapter", R"({"lora_path": "t0"})", 400, "lora_name",
       "'lora_name' is required"},
      {"/v1/load_lora_adapter", R"({"lora_name": "x"})", 400, "lora_path",
       "'lora_path' is required"},
      {"/v1/load_lora_adapter", R"({"lora_name": 7, "lora_path": "t0"})", 400, "lora_name",
       "non-empty string"},
      {"/v1/load_lora_adapter", R"({"lora_name": "", "lora_path": "t0"})", 400, "lora_name",
       "non-empty string"},
      {"/v1/load_lora_adapter", R"({"lora_name": "x", "lora_path": "t0", "load_inplace": "yes"})",
       400, "load_inplace", "boolean"},
      {"/v1/load_lora_adapter", R"({"lora_name": "x", "lora_path": "t0", "base_model_name": 1})",
       400, "base_model_name", "string"},
      {"/v1/load_lora_adapter", R"({"lora_name": "a/b", "lora_path": "t0"})", 400, "", "task_id"},
      {"/v1/load_lora_adapter", R"({"lora_name": "x", "lora_path": "../fixture-model"})", 403, "",
       "outside the adapter root"},
      {"/v1/load_lora_adapter", R"({"lora_name": "x", "lora_path": ")" + outside + "\"}", 403, "",
       "outside the adapter root"},
      {"/v1/load_lora_adapter", R"({"lora_name": "x", "lora_path": "no-such-folder"})", 404, "",
       "no-such-folder"},
      {"/v1/load_lora_adapter", R"([1, 2])", 400, "", "JSON object"},
      {"/v1/load_lora_adapter", R"({"lora_name": )", 400, "", "request body"},
      {"/v1/unload_lora_adapter", R"({"lora_int_id": 3})", 400, "lora_name", "lora_int_id"},
      {"/v1/unload_lora_adapter", R"({"lora_name": "never-loaded"})", 404, "", "never-loaded"},
  };
  const HttpClient http = admin();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path + " " + c.body);
    const HttpReply r = http.post_raw(c.path, c.body);
    EXPECT_EQ(r.status, c.status) << r.body;
    ASSERT_TRUE(r.json.contains("error")) << r.body;
    const json& e = r.json["error"];
    if (c.param.empty()) {
      EXPECT_TRUE(e["param"].is_null()) << r.body;
    } else {
      EXPECT_EQ(e["param"], c.param) << r.body;
    }
    EXPECT_NE(e["message"].get<std::string>().find(c.message), std::string::npos) << r.body;
  }
  EXPECT_EQ(model_ids(admin()), (std::set<std::string>{"fixture-model", tasks_[0], tasks_[1]}));
}

TEST_F(HttpAdapterAdminTest, TheTokenGuardsTheRoutesAndTheRoutesStayOnTheirListener) {
  const json load = {{"lora_name", "guarded"}, {"lora_path", tasks_[0]}};
  for (const std::string& key : {std::string(), std::string("wrong")}) {
    SCOPED_TRACE("key '" + key + "'");
    const HttpReply r =
        HttpClient(server_->http_admin_address(), key).post("/v1/load_lora_adapter", load);
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_NE(r.body.find("admin token"), std::string::npos) << r.body;
    EXPECT_EQ(HttpClient(server_->http_admin_address(), key).get("/v1/models").status, 401);
  }
  // The public listener has no adapter routes, and the admin listener no generation.
  EXPECT_EQ(public_http().post("/v1/load_lora_adapter", load).status, 404);
  EXPECT_EQ(public_http().post("/v1/unload_lora_adapter", {{"lora_name", tasks_[0]}}).status, 404);
  EXPECT_EQ(admin().post("/v1/completions", {{"model", tasks_[0]}, {"prompt", "x"}}).status, 404);
  EXPECT_EQ(model_ids(public_http()),
            (std::set<std::string>{"fixture-model", tasks_[0], tasks_[1]}));
}

}  // namespace
}  // namespace loraserve::testing
