// The bad-file corpus: every malformed file the tests feed the server, with what reading it must
// give. Most cases are files in tests/bad_inputs/<folder>/ (written by make_bad_inputs.py, their
// expectations in expected.json); the large or special ones (FIFOs, devices, sockets, links that
// lead out of the adapter root, sparse files of a terabyte, a million levels of nesting) are made
// here at test time. Paths are relative to the source root (tests run there). Not thread-safe.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace loraserve::testing {

namespace fs = std::filesystem;

// What a case stands in for.
enum class BadTarget {
  kAdapter,      // a file of an adapter folder (or the folder itself), read by LoadAdapter
  kModel,        // a file of a model folder, read at start-up
  kServeConfig,  // the file of `loraserve serve --config`
  kChatConfig,   // tokenizer_config.json of a model folder, read by chat::ChatTemplate::load
};

struct BadFile {
  std::string name;  // "adapter_config/r_zero.json", "special/config_fifo"
  BadTarget target = BadTarget::kAdapter;
  // The file of the folder the case replaces ("adapter_config.json", "model.safetensors", ...);
  // "." when the case replaces the adapter folder itself; "" for --config.
  std::string file;
  StatusCode code = StatusCode::kInvalidArgument;
  std::vector<std::string> contains;  // words the message must hold: the file, the field
  // True when the case is bad only under --adapter-root (a link that leads out of it).
  bool needs_root = false;
  // Writes the case at `path`. `outside` is a folder outside any adapter root.
  std::function<void(const fs::path& path, const fs::path& outside)> make;
};

// Every case: the committed files (expected.json) and the special ones.
std::vector<BadFile> bad_files();

// The fixture folders the cases are written into.
inline constexpr const char* kBadInputsModel = "tests/reference/fixtures/llama_mha_f32";
inline constexpr const char* kBadInputsAdapter =
    "tests/reference/fixtures/llama_mha_f32/adapters/mlp_r4_layer1";

// Makes `dir` a copy of the fixture adapter with the case in place of its file (or, for ".", a
// link to a good adapter folder outside the root in place of the folder).
void write_bad_adapter(const BadFile& c, const fs::path& dir, const fs::path& outside);
// Makes `dir` a copy of the fixture model (no tokenizer.json) with the case in place of its
// file. Index cases get the weights as the shard model-00001-of-00001.safetensors.
void write_bad_model(const BadFile& c, const fs::path& dir, const fs::path& outside);

// "" when `code` and `message` are what the case must give: the exact code, every word of
// `contains`, and a message that stays short (at most 600 bytes) and printable (no control
// characters, valid UTF-8). Otherwise what is wrong.
std::string check_bad_file_error(const BadFile& c, StatusCode code, const std::string& message);

}  // namespace loraserve::testing
