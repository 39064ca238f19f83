// Reading safetensors checkpoints: one file (SafetensorsFile, memory-mapped) or a model folder
// with one or many shards (TensorStore). The header is validated against the file before any
// tensor is handed out: known dtype, shape × dtype size == byte length, offsets inside the data
// region and not overlapping. Both classes are immutable after Open and thread-safe to read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace loraserve::formats {

struct TensorInfo {
  std::string name;
  std::string dtype_name;      // as written in the header ("BF16", "F64", ...)
  std::optional<DType> dtype;  // nullopt: a valid safetensors dtype loraserve does not compute in
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // inside the mapping; valid while the file is open
  size_t nbytes = 0;
  std::string file;  // the path it came from, for error messages

  int64_t numel() const;
  std::string shape_string() const;  // "[4096, 1024]"
};

class SafetensorsFile {
 public:
  // Maps `path` and validates its header. Errors name the file and what is wrong.
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint folder: `model.safetensors`, or the shards listed by
// `model.safetensors.index.json`, or (adapters, tests) one named file.
class TensorStore {
 public:
  // `dir` holds model.safetensors.index.json or exactly the file `single_file_name`.
  static Result<std::unique_ptr<TensorStore>> open_folder(const std::string& dir,
                                                          const std::string& single_file_name);
  static Result<std::unique_ptr<TensorStore>> open_file(const std::string& path);

  const TensorInfo* find(const std::string& name) const;
  // The tensor `name` with exactly `shape`, or NOT_FOUND / INVALID_ARGUMENT naming it.
  Result<const TensorInfo*> get(const std::string& name, const std::vector<int64_t>& shape) const;
  std::vector<std::string> names() const;
  size_t size() const { return index_.size(); }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
};

// Writes tensors as one safetensors file (tests, tools). `data` holds nbytes of each tensor.
struct TensorToWrite {
  std::string name;
  std::string dtype_name;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};
Status write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

// Copies a tensor of F32/F16/BF16 into f32. REQUIRES: out has numel() elements.
Status read_as_f32(const TensorInfo& t, float* out);

}  // namespace loraserve::formats
