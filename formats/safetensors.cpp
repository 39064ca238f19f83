#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

namespace loraserve::formats {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // same limit as the reference implementation

// Element size of every dtype the safetensors format defines; 0 for names it does not define.
size_t safetensors_dtype_size(const std::string& s) {
  static const std::map<std::string, size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = kSizes.find(s);
  return it == kSizes.end() ? 0 : it->second;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_string() const { return fmt::format("[{}]", fmt::join(shape, ", ")); }

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return not_found_error("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument_error("{}: not a regular file", path);
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return invalid_argument_error(
        "{}: truncated safetensors file ({} bytes; the header length alone is 8)", path, size);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return internal_error("{}: mmap failed: {}", path, std::strerror(errno));
  f->map_ = map;
  f->map_size_ = size;

  const auto* base = static_cast<const std::byte*>(map);
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian on every platform loraserve builds for
  if (header_len > kMaxHeaderBytes) {
    return invalid_argument_error("{}: header length {} exceeds the {} byte limit", path,
                                  header_len, kMaxHeaderBytes);
  }
  if (8 + header_len > size) {
    return invalid_argument_error("{}: header length {} runs past the end of the file ({} bytes)",
                                  path, header_len, size);
  }
  const char* header_begin = reinterpret_cast<const char*>(base + 8);
  json header = json::parse(header_begin, header_begin + header_len, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    return invalid_argument_error("{}: header is not a JSON object", path);
  }
  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = size - data_begin;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<std::string> range_names;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object())
        return invalid_argument_error("{}: __metadata__ is not an object", path);
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return invalid_argument_error("{}: __metadata__ value '{}' is not a string", path,
                                        m.key());
        }
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return invalid_argument_error("{}: tensor '{}' lacks dtype, shape or data_offsets", path,
                                    name);
    }
    TensorInfo t;
    t.name = name;
    t.file = path;
    if (!entry["dtype"].is_string())
      return invalid_argument_error("{}: tensor '{}': dtype is not a string", path, name);
    t.dtype_name = entry["dtype"].get<std::string>();
    const size_t elem = safetensors_dtype_size(t.dtype_name);
    if (elem == 0)
      return invalid_argument_error("{}: tensor '{}' has unknown dtype '{}'", path, name,
                                    t.dtype_name);
    t.dtype = parse_dtype(t.dtype_name);
    if (!entry["shape"].is_array())
      return invalid_argument_error("{}: tensor '{}': shape is not a list", path, name);
    uint64_t numel = 1;
    for (const json& d : entry["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return invalid_argument_error("{}: tensor '{}' has an invalid dimension {}", path, name,
                                      d.dump());
      }
      const auto dim = d.get<uint64_t>();
      if (dim != 0 && numel > (std::numeric_limits<uint64_t>::max() / 16) / dim) {
        return invalid_argument_error("{}: tensor '{}' shape overflows", path, name);
      }
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = entry["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      return invalid_argument_error(
          "{}: tensor '{}': data_offsets must be two non-negative integers", path, name);
    }
    const auto begin = off[0].get<uint64_t>();
    const auto end = off[1].get<uint64_t>();
    if (end < begin)
      return invalid_argument_error("{}: tensor '{}': data_offsets end {} < begin {}", path, name,
                                    end, begin);
    if (end > data_size) {
      return invalid_argument_error(
          "{}: tensor '{}': data_offsets [{}, {}] lie outside the {} data bytes", path, name, begin,
          end, data_size);
    }
    if (end - begin != numel * elem) {
      return invalid_argument_error("{}: tensor '{}': {} bytes for shape {} of {} (expected {})",
                                    path, name, end - begin, t.shape_string(), t.dtype_name,
                                    numel * elem);
    }
    t.data = base + data_begin + begin;
    t.nbytes = end - begin;
    ranges.emplace_back(begin, end);
    range_names.push_back(name);
    f->tensors_.emplace(name, std::move(t));
  }
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t k = 1; k < order.size(); ++k) {
    const auto& prev = ranges[order[k - 1]];
    const auto& cur = ranges[order[k]];
    if (cur.first < prev.second) {
      return invalid_argument_error("{}: tensors '{}' and '{}' overlap in the data region", path,
                                    range_names[order[k - 1]], range_names[order[k]]);
    }
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Result<std::unique_ptr<TensorStore>> TensorStore::open_file(const std::string& path) {
  auto store = std::make_unique<TensorStore>();
  LS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(path));
  for (const auto& [name, info] : file->tensors()) store->index_[name] = &info;
  store->files_.push_back(std::move(file));
  return store;
}

Result<std::unique_ptr<TensorStore>> TensorStore::open_folder(const std::string& dir,
                                                              const std::string& single_file_name) {
  const fs::path index_path = fs::path(dir) / (single_file_name + ".index.json");
  if (!fs::exists(index_path)) {
    const fs::path single = fs::path(dir) / single_file_name;
    if (!fs::exists(single)) {
      return not_found_error("{}: neither {} nor {} exists", dir, single_file_name,
                             index_path.filename().string());
    }
    return open_file(single.string());
  }
  std::ifstream in(index_path);
  json index = json::parse(in, nullptr, false);
  if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
      !index["weight_map"].is_object()) {
    return invalid_argument_error("{}: not a JSON object with a 'weight_map' object",
                                  index_path.string());
  }
  auto store = std::make_unique<TensorStore>();
  std::map<std::string, SafetensorsFile*> shards;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return invalid_argument_error("{}: weight_map['{}'] is not a file name", index_path.string(),
                                    it.key());
    }
    const std::string shard = it.value().get<std::string>();
    if (shard.find('/') != std::string::npos || shard == "..") {
      return invalid_argument_error("{}: shard name '{}' must be a plain file name",
                                    index_path.string(), shard);
    }
    if (!shards.count(shard)) {
      LS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open((fs::path(dir) / shard).string()));
      shards[shard] = file.get();
      store->files_.push_back(std::move(file));
    }
    const TensorInfo* t = shards[shard]->find(it.key());
    if (t == nullptr) {
      return not_found_error("{}: lists tensor '{}' in {}, which does not contain it",
                             index_path.string(), it.key(), shard);
    }
    store->index_[it.key()] = t;
  }
  return store;
}

const TensorInfo* TensorStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

Result<const TensorInfo*> TensorStore::get(const std::string& name,
                                           const std::vector<int64_t>& shape) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) return not_found_error("missing tensor '{}'", name);
  if (t->shape != shape) {
    return invalid_argument_error("{}: tensor '{}' has shape {}, expected [{}]", t->file, name,
                                  t->shape_string(), fmt::join(shape, ", "));
  }
  if (!t->dtype || *t->dtype == DType::kI32) {
    return invalid_argument_error("{}: tensor '{}' has dtype {}; weights must be F32, F16 or BF16",
                                  t->file, name, t->dtype_name);
  }
  return t;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, info] : index_) names.push_back(name);
  return names;
}

Status read_as_f32(const TensorInfo& t, float* out) {
  if (!t.dtype || *t.dtype == DType::kI32) {
    return invalid_argument_error("{}: tensor '{}' has dtype {}; expected F32, F16 or BF16", t.file,
                                  t.name, t.dtype_name);
  }
  convert_to_f32(*t.dtype, t.data, out, static_cast<size_t>(t.numel()));
  return ok_status();
}

Status write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {
        {"dtype", t.dtype_name}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return internal_error("{}: cannot write: {}", path, std::strerror(errno));
  const uint64_t len = text.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& t : tensors)
    out.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes));
  if (!out) return internal_error("{}: write failed", path);
  return ok_status();
}

}  // namespace loraserve::formats
