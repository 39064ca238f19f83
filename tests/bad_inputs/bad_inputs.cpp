#include "tests/bad_inputs/bad_inputs.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace loraserve::testing {
namespace {

constexpr const char* kCorpus = "tests/bad_inputs";
constexpr const char* kShard = "model-00001-of-00001.safetensors";

// The file each corpus folder stands in for, and for what.
const std::map<std::string, std::pair<BadTarget, std::string>>& folder_targets() {
  static const std::map<std::string, std::pair<BadTarget, std::string>> kTargets = {
      {"adapter_config", {BadTarget::kAdapter, "adapter_config.json"}},
      {"adapter_model", {BadTarget::kAdapter, "adapter_model.safetensors"}},
      {"config", {BadTarget::kModel, "config.json"}},
      {"generation_config", {BadTarget::kModel, "generation_config.json"}},
      {"model_safetensors", {BadTarget::kModel, "model.safetensors"}},
      {"index", {BadTarget::kModel, "model.safetensors.index.json"}},
      {"tokenizer", {BadTarget::kModel, "tokenizer.json"}},
      {"serve_config", {BadTarget::kServeConfig, ""}},
      {"tokenizer_config", {BadTarget::kChatConfig, "tokenizer_config.json"}},
  };
  return kTargets;
}

StatusCode code_from_name(const std::string& name) {
  for (int c = 0; c <= static_cast<int>(StatusCode::kUnauthenticated); ++c) {
    if (status_code_name(static_cast<StatusCode>(c)) == name) return static_cast<StatusCode>(c);
  }
  throw std::runtime_error("unknown status code in expected.json: " + name);
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

void make_fifo(const fs::path& path) {
  if (::mkfifo(path.c_str(), 0600) != 0) throw std::runtime_error("mkfifo " + path.string());
}

void make_socket(const fs::path& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (fd < 0 || path.string().size() >= sizeof(addr.sun_path))
    throw std::runtime_error("socket " + path.string());
  std::strcpy(addr.sun_path, path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    throw std::runtime_error("bind " + path.string());
  ::close(fd);  // the socket file stays
}

void make_sparse(const fs::path& path, uint64_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).flush();
  fs::resize_file(path, size);
}

// `levels` nested arrays around 1, written without building the text in memory twice.
void make_nested(const fs::path& path, size_t levels, const std::string& before = "",
                 const std::string& after = "") {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << before << std::string(levels, '[') << '1' << std::string(levels, ']') << after;
}

// A safetensors file whose header is `header`.
void make_safetensors_header(const fs::path& path, const std::string& header) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header;
}

// Copies the good version of `file` (from `from`) to `outside` and links `path` to it.
void link_out(const fs::path& from, const std::string& file, const fs::path& path,
              const fs::path& outside) {
  fs::create_directories(outside);
  fs::copy_file(from / file, outside / file, fs::copy_options::overwrite_existing);
  fs::create_symlink(fs::absolute(outside / file), path);
}

BadFile special(std::string name, BadTarget target, std::string file, StatusCode code,
                std::vector<std::string> contains,
                std::function<void(const fs::path&, const fs::path&)> make,
                bool needs_root = false) {
  BadFile c;
  c.name = "special/" + std::move(name);
  c.target = target;
  c.file = std::move(file);
  c.code = code;
  c.contains = std::move(contains);
  c.make = std::move(make);
  c.needs_root = needs_root;
  if (!c.file.empty() && c.file != ".") c.contains.insert(c.contains.begin(), c.file);
  return c;
}

std::vector<BadFile> special_files() {
  using P = const fs::path&;
  const auto invalid = StatusCode::kInvalidArgument;
  const auto adapter = BadTarget::kAdapter;
  const auto model = BadTarget::kModel;
  const auto chat = BadTarget::kChatConfig;
  const std::string config = "adapter_config.json";
  const std::string weights = "adapter_model.safetensors";
  std::vector<BadFile> out = {
      special("config_fifo", adapter, config, invalid, {"a FIFO", "not a regular file"},
              [](P p, P) { make_fifo(p); }),
      special("weights_fifo", adapter, weights, invalid, {"a FIFO"}, [](P p, P) { make_fifo(p); }),
      special("config_dev_zero", adapter, config, invalid, {"a character device"},
              [](P p, P) { fs::create_symlink("/dev/zero", p); }),
      special("weights_dev_zero", adapter, weights, invalid, {"a character device"},
              [](P p, P) { fs::create_symlink("/dev/zero", p); }),
      special("weights_dev_urandom", adapter, weights, invalid, {"a character device"},
              [](P p, P) { fs::create_symlink("/dev/urandom", p); }),
      special("config_socket", adapter, config, invalid, {"a socket"},
              [](P p, P) { make_socket(p); }),
      special("config_is_folder", adapter, config, invalid, {"a folder"},
              [](P p, P) { fs::create_directories(p); }),
      special("config_dangling_link", adapter, config, StatusCode::kNotFound, {"missing"},
              [](P p, P o) { fs::create_symlink(o / "nothing_here.json", p); }),
      special("config_sparse_1gib", adapter, config, invalid,
              {"--max-config-bytes", "1073741824"}, [](P p, P) { make_sparse(p, 1ull << 30); }),
      // Valid JSON of 2 MiB: parsed, its 300,000 short strings would take about 60 MB.
      special("config_2mib_of_targets", adapter, config, invalid,
              {"--max-config-bytes", "2100009 bytes", "1048576"},
              [](P p, P) {
                std::string text = R"({"peft_type": "LORA", "r": 8, "target_modules": ["q_proj")";
                while (text.size() < 2100000) text += R"(, "q_proj")";
                write_text(p, text + "]}");
              }),
      special("model_config_sparse_2mib", model, "config.json", invalid,
              {"config.json", "--max-config-bytes"}, [](P p, P) { make_sparse(p, 2ull << 20); }),
      special("weights_sparse_1tib", adapter, weights, invalid,
              {"1099511627776 bytes", "more than the"},
              [](P p, P) { make_sparse(p, 1ull << 40); }),
      // 400 KB: the depth cap, not --max-config-bytes, refuses it.
      special("config_nested_200k", adapter, config, invalid,
              {"deeper than 64 levels", "--max-json-depth"},
              [](P p, P) { make_nested(p, 200000, "{\"peft_type\": \"LORA\", \"x\": ", "}"); }),
      special("weights_header_nested_million", adapter, weights, invalid,
              {"deeper than 64 levels"},
              [](P p, P) {
                make_safetensors_header(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":" +
                                               std::string(1000000, '[') + "1" +
                                               std::string(1000000, ']') +
                                               ",\"data_offsets\":[0,4]}}");
              }),
      special("config_missing", adapter, config, StatusCode::kNotFound, {"missing"},
              [](P, P) {}),
      special("weights_missing", adapter, weights, StatusCode::kNotFound,
              {"missing adapter_model.safetensors"}, [](P, P) {}),
      special("weights_only_pickle", adapter, weights, invalid,
              {"adapter_model.bin", "pickle", "never unpickles"},
              [](P p, P) { write_text(p.parent_path() / "adapter_model.bin", "\x80\x04K."); }),
      special("config_link_out_of_root", adapter, config, StatusCode::kPermissionDenied,
              {"leads outside the adapter root"},
              [](P p, P o) { link_out(kBadInputsAdapter, "adapter_config.json", p, o); },
              /*needs_root=*/true),
      special("weights_link_out_of_root", adapter, weights, StatusCode::kPermissionDenied,
              {"leads outside the adapter root"},
              [](P p, P o) { link_out(kBadInputsAdapter, "adapter_model.safetensors", p, o); },
              /*needs_root=*/true),
      special("folder_link_out_of_root", adapter, ".", StatusCode::kPermissionDenied,
              {"outside the adapter root"},
              [](P p, P o) {
                const fs::path good = o / "good_adapter";
                fs::create_directories(good);
                for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
                  fs::copy_file(fs::path(kBadInputsAdapter) / f, good / f,
                                fs::copy_options::overwrite_existing);
                fs::create_directory_symlink(fs::absolute(good), p);
              },
              /*needs_root=*/true),
      special("model_config_fifo", model, "config.json", invalid, {"a FIFO"},
              [](P p, P) { make_fifo(p); }),
      special("model_config_is_folder", model, "config.json", invalid, {"a folder"},
              [](P p, P) { fs::create_directories(p); }),
      special("model_config_missing", model, "config.json", StatusCode::kNotFound,
              {"no such file"}, [](P, P) {}),
      special("model_config_nested_200k", model, "config.json", invalid,
              {"deeper than 64 levels"},
              [](P p, P) { make_nested(p, 200000, "{\"architectures\": ", "}"); }),
      special("model_generation_config_dev_urandom", model, "generation_config.json", invalid,
              {"a character device"},
              [](P p, P) { fs::create_symlink("/dev/urandom", p); }),
      special("model_tokenizer_dev_zero", model, "tokenizer.json", invalid,
              {"a character device"}, [](P p, P) { fs::create_symlink("/dev/zero", p); }),
      special("model_tokenizer_fifo", model, "tokenizer.json", invalid, {"a FIFO"},
              [](P p, P) { make_fifo(p); }),
      special("model_tokenizer_sparse_100mib", model, "tokenizer.json", invalid,
              {"--max-json-bytes", "104857600 bytes"},
              [](P p, P) { make_sparse(p, 100ull << 20); }),
      special("model_weights_fifo", model, "model.safetensors", invalid, {"a FIFO"},
              [](P p, P) { make_fifo(p); }),
      special("model_weights_sparse_1tib", model, "model.safetensors", invalid,
              {"not valid JSON"}, [](P p, P) { make_sparse(p, 1ull << 40); }),
      special("model_weights_missing", model, "model.safetensors", StatusCode::kNotFound,
              {"neither model.safetensors nor model.safetensors.index.json exists"},
              [](P, P) {}),
      special("model_index_shard_fifo", model, "model.safetensors.index.json", invalid,
              {"model-00002-of-00002.safetensors", "a FIFO"},
              [](P p, P) {
                write_text(p, R"({"weight_map": {"model.norm.weight": )"
                              R"("model-00002-of-00002.safetensors"}})");
                make_fifo(p.parent_path() / "model-00002-of-00002.safetensors");
              }),
      special("chat_config_fifo", chat, "tokenizer_config.json", invalid, {"a FIFO"},
              [](P p, P) { make_fifo(p); }),
      special("chat_config_dev_zero", chat, "tokenizer_config.json", invalid,
              {"a character device"}, [](P p, P) { fs::create_symlink("/dev/zero", p); }),
      special("chat_config_is_folder", chat, "tokenizer_config.json", invalid, {"a folder"},
              [](P p, P) { fs::create_directories(p); }),
      special("chat_config_sparse_1gib", chat, "tokenizer_config.json", invalid,
              {"--max-json-bytes", "1073741824"}, [](P p, P) { make_sparse(p, 1ull << 30); }),
      special("chat_config_nested_million", chat, "tokenizer_config.json", invalid,
              {"deeper than 64 levels"},
              [](P p, P) { make_nested(p, 1000000, "{\"chat_template\": ", "}"); }),
  };
  return out;
}

bool printable_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    if (b < 0x20 || b == 0x7F) return false;
    const size_t n = b < 0x80             ? 1
                     : (b & 0xE0) == 0xC0 ? 2
                     : (b & 0xF0) == 0xE0 ? 3
                     : (b & 0xF8) == 0xF0 ? 4
                                          : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

std::vector<BadFile> bad_files() {
  std::ifstream in(fs::path(kCorpus) / "expected.json");
  if (!in)
    throw std::runtime_error("tests/bad_inputs/expected.json not found: run from the source root");
  const nlohmann::json expected = nlohmann::json::parse(in);
  std::vector<BadFile> out;
  for (const auto& [name, e] : expected.items()) {
    const std::string folder = name.substr(0, name.find('/'));
    const auto& [target, file] = folder_targets().at(folder);
    BadFile c;
    c.name = name;
    c.target = target;
    c.file = file;
    c.code = code_from_name(e.at("code").get<std::string>());
    c.contains = e.at("contains").get<std::vector<std::string>>();
    const fs::path source = fs::path(kCorpus) / name;
    c.make = [source](const fs::path& path, const fs::path&) {
      fs::copy_file(source, path, fs::copy_options::overwrite_existing);
    };
    out.push_back(std::move(c));
  }
  for (BadFile& c : special_files()) out.push_back(std::move(c));
  return out;
}

void write_bad_adapter(const BadFile& c, const fs::path& dir, const fs::path& outside) {
  if (c.file == ".") {
    fs::create_directories(dir.parent_path());
    c.make(dir, outside);
    return;
  }
  fs::create_directories(dir);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"}) {
    if (f != c.file)
      fs::copy_file(fs::path(kBadInputsAdapter) / f, dir / f, fs::copy_options::overwrite_existing);
  }
  c.make(dir / c.file, outside);
}

void write_bad_model(const BadFile& c, const fs::path& dir, const fs::path& outside) {
  fs::create_directories(dir);
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors"}) {
    if (f != c.file)
      fs::copy_file(fs::path(kBadInputsModel) / f, dir / f, fs::copy_options::overwrite_existing);
  }
  if (c.file == "model.safetensors.index.json") fs::rename(dir / "model.safetensors", dir / kShard);
  c.make(dir / c.file, outside);
}

std::string check_bad_file_error(const BadFile& c, StatusCode code, const std::string& message) {
  std::string wrong;
  if (code != c.code) {
    wrong +=
        fmt::format("code {} (expected {}); ", status_code_name(code), status_code_name(c.code));
  }
  for (const std::string& word : c.contains) {
    if (message.find(word) == std::string::npos) wrong += fmt::format("lacks '{}'; ", word);
  }
  if (message.size() > 600) wrong += fmt::format("{} bytes long; ", message.size());
  if (!printable_utf8(message)) wrong += "not printable UTF-8; ";
  if (!wrong.empty()) wrong += "message: " + message.substr(0, 1000);
  return wrong;
}

}  // namespace loraserve::testing
