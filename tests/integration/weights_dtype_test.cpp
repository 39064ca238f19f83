// --weights-dtype through the binary: `serve` keeps the weights as asked and GetServerInfo says
// so (with the adapters of the fixture served beside them); `generate` takes the flag; a value
// that is not auto, f32, bf16 or int8 fails naming the flag. --lora-dtype likewise, with
// ListAdapters saying each adapter's dtype.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <tuple>
#include <vector>

#include "client/client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

TEST(WeightsDtype, ServeReportsTheDtypeAndServesAdapters) {
  for (const auto& [flag, reported] : {std::pair{"int8", "I8"}, std::pair{"bf16", "BF16"},
                                       std::pair{"f32", "F32"}, std::pair{"auto", "F32"}}) {
    TempDir dir;
    const std::string root = std::string(kFixtureModel) + "/adapters";
    auto server =
        ServerProcess::start({"--model", kFixtureModel, "--weights-dtype", flag, "--adapter-root",
                              root, "--preload", "t=" + root + "/all7_r8"},
                             dir.path());
    ASSERT_TRUE(server.ok()) << flag << ": " << server.status().to_string();
    client::Client client(client_options(**server));
    auto info = client.server_info();
    ASSERT_TRUE(info.ok()) << info.status().to_string();
    // The fixture is an F32 checkpoint: auto keeps F32 on every CPU.
    EXPECT_EQ(info->weight_dtype(), reported) << flag;
    EXPECT_EQ(info->compute_dtype(), "F32") << flag;
    for (const char* task : {"t", ""}) {
      v1::GenerateRequest r;
      r.set_task_id(task);
      for (int32_t id : {5, 6, 7, 8}) r.mutable_token_ids()->add_ids(id);
      r.mutable_params()->set_max_tokens(6);
      r.mutable_params()->set_ignore_eos(true);
      auto out = client.generate(r);
      ASSERT_TRUE(out.ok()) << flag << " task '" << task << "': " << out.status().to_string();
      EXPECT_EQ(out->token_ids_size(), 6) << flag;
    }
    EXPECT_NE(log_tail(**server).find(std::string("weights in ") + reported), std::string::npos)
        << flag << ": the log says which dtype and why\n"
        << log_tail(**server);
  }
}

TEST(WeightsDtype, GenerateTakesTheFlagAndRefusesOtherValues) {
  TempDir dir;
  const fs::path input = dir.path() / "in.jsonl";
  std::ofstream(input) << R"({"prompt_token_ids": [5, 6, 7], "max_tokens": 4, "ignore_eos": true})"
                       << "\n";
  std::string out;
  const fs::path log = dir.path() / "generate.log";
  EXPECT_EQ(run_command({loraserve_binary(), "generate", "--model", kFixtureModel, "--input",
                         input.string(), "--weights-dtype", "int8"},
                        &out, log),
            0)
      << out;
  EXPECT_NE(out.find("\"token_ids\""), std::string::npos) << out;
  // CLI11's exit code for a value a flag refuses.
  EXPECT_NE(run_command({loraserve_binary(), "generate", "--model", kFixtureModel, "--input",
                         input.string(), "--weights-dtype", "fp8"},
                        &out, log),
            0);
  std::ifstream in(log);
  const std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(err.find("--weights-dtype"), std::string::npos) << err;
}

// The fixture's all7_r8 is an F32 file, mlp_r4_layer1 a BF16 one. auto keeps each file's dtype;
// f32 and bf16 hold both as asked. A BF16 file's adapter gives the same tokens held in BF16 as
// in F32 (its values are the same; only the order of the sums may differ).
TEST(LoraDtype, ServeHoldsAdaptersAsAskedAndListsTheirDtype) {
  const std::string root = std::string(kFixtureModel) + "/adapters";
  std::map<std::string, std::vector<int32_t>> tokens;  // flag → the BF16 file's tokens
  for (const auto& [flag, f32_file, bf16_file] :
       {std::tuple{"auto", "F32", "BF16"}, std::tuple{"f32", "F32", "F32"},
        std::tuple{"bf16", "BF16", "BF16"}}) {
    TempDir dir;
    auto server = ServerProcess::start(
        {"--model", kFixtureModel, "--lora-dtype", flag, "--adapter-root", root, "--preload",
         "f=" + root + "/all7_r8", "--preload", "b=" + root + "/mlp_r4_layer1"},
        dir.path());
    ASSERT_TRUE(server.ok()) << flag << ": " << server.status().to_string();
    client::Client client(client_options(**server));
    auto list = client.list_adapters();
    ASSERT_TRUE(list.ok()) << list.status().to_string();
    std::map<std::string, std::string> dtypes;
    for (const auto& a : list->adapters()) dtypes[a.task_id()] = a.dtype();
    EXPECT_EQ(dtypes["f"], f32_file) << flag;
    EXPECT_EQ(dtypes["b"], bf16_file) << flag;
    v1::GenerateRequest r;
    r.set_task_id("b");
    for (int32_t id : {5, 6, 7, 8}) r.mutable_token_ids()->add_ids(id);
    r.mutable_params()->set_max_tokens(8);
    r.mutable_params()->set_temperature(0.0f);
    r.mutable_params()->set_ignore_eos(true);
    auto out = client.generate(r);
    ASSERT_TRUE(out.ok()) << flag << ": " << out.status().to_string();
    tokens[flag].assign(out->token_ids().begin(), out->token_ids().end());
    EXPECT_EQ(tokens[flag].size(), 8u) << flag;
  }
  EXPECT_EQ(tokens["auto"], tokens["f32"]);
  EXPECT_EQ(tokens["auto"], tokens["bf16"]);

  TempDir dir;
  std::string out;
  const fs::path log = dir.path() / "serve.log";
  EXPECT_NE(
      run_command({loraserve_binary(), "serve", "--model", kFixtureModel, "--lora-dtype", "int8"},
                  &out, log),
      0);
  std::ifstream in(log);
  const std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(err.find("--lora-dtype"), std::string::npos) << err;
}

}  // namespace
}  // namespace loraserve::testing
