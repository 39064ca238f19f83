#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <tuple>

#include "common/checked_math.h"
#include "common/excerpt.h"
#include "common/untrusted_json.h"

namespace loraserve::formats {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Element size of every dtype the safetensors format defines; 0 for names it does not define.
size_t safetensors_dtype_size(const std::string& s) {
  static const std::map<std::string, size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = kSizes.find(s);
  return it == kSizes.end() ? 0 : it->second;
}

// The longest header accepted: the format's cap, or --max-json-bytes when lower.
uint64_t max_header_bytes() {
  return std::min(kMaxSafetensorsHeaderBytes, json_limits().max_bytes);
}

// A tensor's entry checked and measured: dtype, shape, byte count, data offsets.
Status parse_entry(const std::string& source, const std::string& name, const json& entry,
                   TensorInfo* t, uint64_t* begin, uint64_t* end) {
  const std::string shown = excerpt(name);
  if (!entry.is_object()) {
    return invalid_argument_error("{}: tensor {}: expected an object, got {}", source, shown,
                                  json_excerpt(entry));
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field))
      return invalid_argument_error("{}: tensor {} lacks '{}'", source, shown, field);
  }
  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    return invalid_argument_error("{}: tensor {}: dtype must be a string, got {}", source, shown,
                                  json_excerpt(dtype));
  }
  t->dtype_name = dtype.get<std::string>();
  const size_t elem = safetensors_dtype_size(t->dtype_name);
  if (elem == 0) {
    return invalid_argument_error("{}: tensor {} has unknown dtype {}", source, shown,
                                  excerpt(t->dtype_name));
  }
  t->dtype = parse_dtype(t->dtype_name);
  const json& shape = entry["shape"];
  if (!shape.is_array()) {
    return invalid_argument_error("{}: tensor {}: shape must be a list, got {}", source, shown,
                                  json_excerpt(shape));
  }
  int64_t numel = 1;
  for (const json& d : shape) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return invalid_argument_error("{}: tensor {} has an invalid dimension {} in shape", source,
                                    shown, json_excerpt(d));
    }
    const auto dim = static_cast<int64_t>(d.get<uint64_t>());
    const auto product = checked_mul(numel, dim);
    if (!product) {
      return invalid_argument_error("{}: tensor {}: the shape's element count overflows", source,
                                    shown);
    }
    numel = *product;
    t->shape.push_back(dim);
  }
  const auto nbytes = checked_mul(numel, static_cast<int64_t>(elem));
  if (!nbytes) {
    return invalid_argument_error("{}: tensor {}: the shape's byte count overflows", source, shown);
  }
  const json& off = entry["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned()) {
    return invalid_argument_error(
        "{}: tensor {}: data_offsets must be two non-negative integers, got {}", source, shown,
        json_excerpt(off));
  }
  *begin = off[0].get<uint64_t>();
  *end = off[1].get<uint64_t>();
  if (*end < *begin) {
    return invalid_argument_error("{}: tensor {}: data_offsets end {} < begin {}", source, shown,
                                  *end, *begin);
  }
  if (*end - *begin != static_cast<uint64_t>(*nbytes)) {
    return invalid_argument_error("{}: tensor {}: {} bytes for shape {} of {} (expected {})",
                                  source, shown, *end - *begin, t->shape_string(), t->dtype_name,
                                  *nbytes);
  }
  return ok_status();
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated at open: no overflow
  return n;
}

std::string TensorInfo::shape_string() const {
  if (shape.size() > 8) {
    return fmt::format("[{}, ... ({} dimensions)]",
                       fmt::join(shape.begin(), shape.begin() + 8, ", "), shape.size());
  }
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  LS_ASSIGN_OR_RETURN(const ReadOnlyFile file, open_regular_file(path));
  return open(file, SafetensorsReadOptions{});
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(
    const ReadOnlyFile& file, const SafetensorsReadOptions& options) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = file.name();
  f->size_ = file.size();
  if (f->size_ > options.max_file_bytes) {
    return invalid_argument_error(
        "{}: {} bytes, more than the {} bytes an adapter of this model "
        "can hold",
        f->path_, f->size_, options.max_file_bytes);
  }
  if (f->size_ < 8) {
    return invalid_argument_error(
        "{}: truncated safetensors file ({} bytes; the header length alone is 8)", f->path_,
        f->size_);
  }
  if (options.map) {
    void* map = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, file.fd(), 0);
    if (map == MAP_FAILED)
      return internal_error("{}: mmap failed: {}", f->path_, std::strerror(errno));
    f->map_ = map;
    f->base_ = static_cast<const std::byte*>(map);
  } else {
    // The length, then the header when index() will accept its length (else it refuses the
    // length without reading on).
    uint64_t header_len = 0;
    LS_RETURN_IF_ERROR(file.read_at(0, &header_len, 8));
    const uint64_t max_header = max_header_bytes();
    const bool fits = header_len <= max_header && header_len <= f->size_ - 8;
    f->bytes_.resize(8 + static_cast<size_t>(fits ? header_len : 0));
    LS_RETURN_IF_ERROR(file.read_at(0, f->bytes_.data(), f->bytes_.size()));
    f->base_ = reinterpret_cast<const std::byte*>(f->bytes_.data());
    f->header_only_ = true;
  }
  LS_RETURN_IF_ERROR(f->index());
  return f;
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::parse(std::string bytes,
                                                                const std::string& name) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  f->bytes_ = std::move(bytes);
  f->size_ = f->bytes_.size();
  f->base_ = reinterpret_cast<const std::byte*>(f->bytes_.data());
  if (f->size_ < 8) {
    return invalid_argument_error(
        "{}: truncated safetensors file ({} bytes; the header length alone is 8)", f->path_,
        f->size_);
  }
  LS_RETURN_IF_ERROR(f->index());
  return f;
}

Status SafetensorsFile::index() {
  const std::string& path = path_;
  uint64_t header_len = 0;
  std::memcpy(&header_len, base_, 8);  // little-endian on every platform loraserve builds for
  const uint64_t max_header = max_header_bytes();
  if (header_len > max_header) {
    return invalid_argument_error(
        "{}: header length {} exceeds the limit of {} bytes (the format's 100 MB, or "
        "--max-json-bytes)",
        path, header_len, max_header);
  }
  if (header_len > size_ - 8) {
    return invalid_argument_error("{}: header length {} runs past the end of the file ({} bytes)",
                                  path, header_len, size_);
  }
  const std::string_view header_text(reinterpret_cast<const char*>(base_ + 8), header_len);
  LS_ASSIGN_OR_RETURN(const json header, parse_untrusted_json(header_text, path + " header"));
  if (!header.is_object()) {
    return invalid_argument_error("{}: the header is not a JSON object (got {})", path,
                                  json_excerpt(header));
  }
  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = size_ - data_begin;

  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return invalid_argument_error("{}: __metadata__ must be an object, got {}", path,
                                      json_excerpt(entry));
      }
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return invalid_argument_error("{}: __metadata__[{}] must be a string, got {}", path,
                                        excerpt(m.key()), json_excerpt(m.value()));
        }
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    TensorInfo t;
    t.name = name;
    t.file = path;
    uint64_t begin = 0;
    uint64_t end = 0;
    LS_RETURN_IF_ERROR(parse_entry(path, name, entry, &t, &begin, &end));
    if (end > data_size) {
      return invalid_argument_error(
          "{}: tensor {}: data_offsets [{}, {}] lie outside the {} data bytes", path, excerpt(name),
          begin, end, data_size);
    }
    t.offset = data_begin + begin;
    t.data = header_only_ ? nullptr : base_ + t.offset;
    t.nbytes = static_cast<size_t>(end - begin);
    auto [pos, inserted] = tensors_.emplace(name, std::move(t));
    ranges.push_back({begin, end, &pos->first});
  }
  // The tensors tile the data region: in offset order, each starts where the previous ended,
  // and the last ends at the end of the file.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t expected = 0;
  const std::string* previous = nullptr;
  for (const Range& r : ranges) {
    if (r.begin < expected) {
      return invalid_argument_error("{}: tensors {} and {} overlap in the data region", path,
                                    excerpt(*previous), excerpt(*r.name));
    }
    if (r.begin > expected) {
      return invalid_argument_error(
          "{}: tensor {} starts at data byte {}, but the data before it ends at {} (tensors "
          "must tile the data region)",
          path, excerpt(*r.name), r.begin, expected);
    }
    expected = r.end;
    previous = r.name;
  }
  if (expected != data_size) {
    return invalid_argument_error(
        "{}: the tensors cover {} of the {} data bytes; the rest belongs to no tensor", path,
        expected, data_size);
  }
  return ok_status();
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, static_cast<size_t>(size_));
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Result<std::unique_ptr<TensorStore>> TensorStore::open_file(const std::string& path) {
  LS_ASSIGN_OR_RETURN(const ReadOnlyFile file, open_regular_file(path));
  return open_file(file, SafetensorsReadOptions{});
}

Result<std::unique_ptr<TensorStore>> TensorStore::open_file(const ReadOnlyFile& file,
                                                            const SafetensorsReadOptions& options) {
  auto store = std::make_unique<TensorStore>();
  store->source_ = file.name();
  LS_ASSIGN_OR_RETURN(auto opened, SafetensorsFile::open(file, options));
  for (const auto& [name, info] : opened->tensors()) store->index_[name] = &info;
  store->files_.push_back(std::move(opened));
  return store;
}

Result<std::unique_ptr<TensorStore>> TensorStore::open_folder(const std::string& dir,
                                                              const std::string& single_file_name) {
  LS_ASSIGN_OR_RETURN(const Folder folder, Folder::open(dir));
  return open_folder(folder, single_file_name);
}

Result<std::unique_ptr<TensorStore>> TensorStore::open_folder(const Folder& dir,
                                                              const std::string& single_file_name) {
  const std::string index_name = single_file_name + ".index.json";
  if (!dir.has(index_name)) {
    if (!dir.has(single_file_name)) {
      return not_found_error("{}: neither {} nor {} exists", dir.name(), single_file_name,
                             index_name);
    }
    LS_ASSIGN_OR_RETURN(const ReadOnlyFile file, dir.open_file(single_file_name));
    return open_file(file, SafetensorsReadOptions{});
  }
  LS_ASSIGN_OR_RETURN(const ReadOnlyFile index_file, dir.open_file(index_name));
  const std::string& index_path = index_file.name();
  LS_ASSIGN_OR_RETURN(const json index, read_json_file(index_file));
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return invalid_argument_error("{}: not a JSON object with a 'weight_map' object", index_path);
  }
  auto store = std::make_unique<TensorStore>();
  store->source_ = dir.name();
  std::map<std::string, SafetensorsFile*> shards;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return invalid_argument_error("{}: weight_map[{}] must be a file name, got {}", index_path,
                                    excerpt(it.key()), json_excerpt(it.value()));
    }
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
        shard.find('\0') != std::string::npos) {
      return invalid_argument_error(
          "{}: weight_map[{}] names {}, which must be a plain file name in the model folder",
          index_path, excerpt(it.key()), excerpt(shard));
    }
    if (!shards.count(shard)) {
      LS_ASSIGN_OR_RETURN(const ReadOnlyFile shard_file,
                          dir.open_file(shard).with_context(index_path + ": weight_map"));
      LS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(shard_file, SafetensorsReadOptions{}));
      shards[shard] = file.get();
      store->files_.push_back(std::move(file));
    }
    const TensorInfo* t = shards[shard]->find(it.key());
    if (t == nullptr) {
      return invalid_argument_error("{}: weight_map lists tensor {} in {}, which does not hold it",
                                    index_path, excerpt(it.key()), excerpt(shard));
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
  if (t == nullptr) return invalid_argument_error("{}: missing tensor '{}'", source_, name);
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
    return invalid_argument_error("{}: tensor {} has dtype {}; expected F32, F16 or BF16",
                                  shown_path(t.file), excerpt(t.name, kPathExcerptBytes),
                                  excerpt(t.dtype_name));
  }
  if (t.data == nullptr)
    return internal_error("{}: tensor {} was not read", shown_path(t.file), excerpt(t.name));
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
