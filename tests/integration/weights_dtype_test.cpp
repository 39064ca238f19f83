// --weights-dtype through the binary: `serve` keeps the weights as asked and GetServerInfo says
// so (with the adapters of the fixture served beside them); `generate` takes the flag; a value
// that is not auto, f32, bf16 or int8 fails naming the flag.
#include <gtest/gtest.h>

#include <fstream>

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

}  // namespace
}  // namespace loraserve::testing
