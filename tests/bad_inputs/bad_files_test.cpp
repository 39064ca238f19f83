// Every bad file of the corpus, read the way the server reads it: adapter cases through the
// registry (confined to an adapter root, as LoadAdapter loads them), model cases through
// open_engine. Each gives its exact status code and a short, printable message naming the file
// and the field, and a failed adapter load leaves the registry as it was.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "adapters/registry.h"
#include "chat/chat_template.h"
#include "engine/loader.h"
#include "formats/hf_config.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/bad_inputs/bad_inputs.h"

namespace loraserve::testing {
namespace {

class BadFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("loraserve_bad_files_{}", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "root");
    fs::create_directories(dir_ / "outside");
    root_ = fs::canonical(dir_ / "root").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  std::string root_;
};

TEST_F(BadFilesTest, CorpusHasEnoughCasesOfEveryKind) {
  const std::vector<BadFile> cases = bad_files();
  size_t adapter = 0, model = 0, config = 0, chat = 0;
  for (const BadFile& c : cases) {
    adapter += c.target == BadTarget::kAdapter;
    model += c.target == BadTarget::kModel;
    config += c.target == BadTarget::kServeConfig;
    chat += c.target == BadTarget::kChatConfig;
  }
  EXPECT_GE(cases.size(), 120u);
  EXPECT_GE(adapter, 60u);
  EXPECT_GE(model, 60u);
  EXPECT_GE(config, 5u);
  EXPECT_GE(chat, 20u);
  std::cout << cases.size() << " bad files: " << adapter << " adapter, " << model << " model, "
            << config << " --config, " << chat << " tokenizer_config.json\n";
}

TEST_F(BadFilesTest, EveryBadAdapterIsRefusedAndTheRegistryKeepsWhatItServes) {
  auto model = formats::load_model_config(kBadInputsModel);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  auto backend = kernels::create_cpu_backend(1);
  adapters::AdapterRegistry registry(*model, backend.get(), adapters::RegistryOptions{8, 32});
  fs::copy(kBadInputsAdapter, dir_ / "root" / "good");
  adapters::LoadOptions confined;
  confined.root = root_;
  auto kept = registry.load("kept", (dir_ / "root" / "good").string(), confined);
  ASSERT_TRUE(kept.ok()) << kept.status().to_string();
  const uint64_t kept_version = (*kept)->version;

  int n = 0, tried = 0;
  for (const BadFile& c : bad_files()) {
    if (c.target != BadTarget::kAdapter) continue;
    SCOPED_TRACE(c.name);
    const fs::path dir = dir_ / "root" / fmt::format("case{}", n++);
    write_bad_adapter(c, dir, dir_ / "outside" / fmt::format("case{}", n));
    auto r = registry.load("bad", dir.string(), confined);
    ASSERT_FALSE(r.ok()) << "loaded";
    EXPECT_EQ(check_bad_file_error(c, r.status().code(), r.status().message()), "");
    ASSERT_EQ(registry.size(), 1u);
    ASSERT_NE(registry.find("kept"), nullptr);
    EXPECT_EQ(registry.find("kept")->version, kept_version);
    ++tried;
    // Unconfined (--preload, `generate --adapter`), only links out of the root are fine.
    auto free = registry.load("bad", dir.string(), adapters::LoadOptions{});
    if (c.needs_root) {
      EXPECT_TRUE(free.ok()) << free.status().to_string();
      if (free.ok()) {
        ASSERT_TRUE(registry.unload("bad").ok());
      }
    } else {
      ASSERT_FALSE(free.ok());
      EXPECT_EQ(free.status().code(), c.code) << free.status().to_string();
    }
  }
  std::cout << tried << " bad adapters refused\n";
}

TEST_F(BadFilesTest, EveryBadModelFolderIsRefused) {
  kernels::BackendOptions backend;
  backend.device = "cpu";
  backend.cpu_threads = 1;
  int n = 0, tried = 0;
  for (const BadFile& c : bad_files()) {
    if (c.target != BadTarget::kModel) continue;
    SCOPED_TRACE(c.name);
    const fs::path dir = dir_ / fmt::format("model{}", n++);
    write_bad_model(c, dir, dir_ / "outside");
    auto engine = engine::open_engine(dir.string(), backend, engine::EngineOptions{});
    ASSERT_FALSE(engine.ok()) << "opened";
    EXPECT_EQ(check_bad_file_error(c, engine.status().code(), engine.status().message()), "");
    fs::remove_all(dir);
    ++tried;
  }
  std::cout << tried << " bad model folders refused\n";
}

// tokenizer_config.json is read by the chat template's loader (the OpenAI-compatible chat
// endpoint), not at start-up: each case through ChatTemplate::load.
TEST_F(BadFilesTest, EveryBadTokenizerConfigIsRefused) {
  int n = 0, tried = 0;
  for (const BadFile& c : bad_files()) {
    if (c.target != BadTarget::kChatConfig) continue;
    SCOPED_TRACE(c.name);
    const fs::path dir = dir_ / fmt::format("chat{}", n++);
    write_bad_model(c, dir, dir_ / "outside");
    auto t = chat::ChatTemplate::load(dir.string());
    ASSERT_FALSE(t.ok()) << "loaded";
    EXPECT_EQ(check_bad_file_error(c, t.status().code(), t.status().message()), "");
    fs::remove_all(dir);
    ++tried;
  }
  std::cout << tried << " bad tokenizer_config.json files refused\n";
}

}  // namespace
}  // namespace loraserve::testing
