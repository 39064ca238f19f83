// Reading safetensors checkpoints: one file (SafetensorsFile) or a model folder with one or many
// shards (TensorStore). Files are untrusted: the header length is checked against the file size
// and a cap before the header is read, the header is parsed with JSON's size and depth limits,
// and every entry is validated as the reference implementation does before any tensor is handed
// out: known dtype, non-negative integer dimensions whose product (and byte count) does not
// overflow, shape x dtype size == byte length, and data offsets that tile the data region exactly
// (in order, no gap, no overlap, nothing after). Both classes are immutable after open and
// thread-safe to read.
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
#include "common/untrusted_file.h"

namespace loraserve::formats {

struct TensorInfo {
  std::string name;
  std::string dtype_name;      // as written in the header ("BF16", "F64", ...)
  std::optional<DType> dtype;  // nullopt: a valid safetensors dtype loraserve does not compute in
  std::vector<int64_t> shape;
  // Inside the mapping or the in-memory copy, valid while the file is open; nullptr when only the
  // header was read (SafetensorsReadOptions::map false): the bytes are then at `offset` in the
  // file.
  const std::byte* data = nullptr;
  uint64_t offset = 0;  // of the first byte in the file
  size_t nbytes = 0;
  std::string file;  // the path it came from, for error messages

  int64_t numel() const;
  std::string shape_string() const;  // "[4096, 1024]"
};

// The reference implementation's cap on the header (MAX_HEADER_SIZE); --max-json-bytes may
// lower it.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// How a file's bytes are held once it is open.
struct SafetensorsReadOptions {
  // true: memory-mapped, nothing copied (model checkpoints; the operator's files). false: only
  // the header is read; the caller reads each tensor's bytes itself (ReadOnlyFile::read_at at
  // TensorInfo::offset), straight to where they go, so that nothing is copied twice and a file
  // changed or truncated later cannot fault the process (adapters, which an admin names at run
  // time: a shrunk file is a read error).
  bool map = true;
  // Larger files are refused before anything is read (INVALID_ARGUMENT).
  uint64_t max_file_bytes = UINT64_MAX;
};

class SafetensorsFile {
 public:
  // Opens `path` (a regular file), maps it and validates its header. Errors name the file and
  // what is wrong: NOT_FOUND when it is absent, INVALID_ARGUMENT when it is malformed.
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  static Result<std::unique_ptr<SafetensorsFile>> open(const ReadOnlyFile& file,
                                                       const SafetensorsReadOptions& options);
  // Validates a whole file held in `bytes` (`name` names it in errors); the tensors point into
  // the returned object's copy.
  static Result<std::unique_ptr<SafetensorsFile>> parse(std::string bytes, const std::string& name);
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
  // Validates the header of the file held at base_ (size_ bytes) and fills tensors_.
  Status index();

  std::string path_;  // as messages show it
  const std::byte* base_ = nullptr;
  uint64_t size_ = 0;
  void* map_ = nullptr;  // when mapped
  bool header_only_ = false;
  std::string bytes_;  // when read into memory (parse()), or the header alone
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint folder: `model.safetensors`, or the shards listed by
// `model.safetensors.index.json`, or (adapters, tests) one named file.
class TensorStore {
 public:
  // `dir` holds `single_file_name`.index.json or the file `single_file_name`. The index's shard
  // names must be plain file names of the folder. NOT_FOUND when neither file (or a listed
  // shard) exists; INVALID_ARGUMENT naming the file and field when one is malformed.
  static Result<std::unique_ptr<TensorStore>> open_folder(const std::string& dir,
                                                          const std::string& single_file_name);
  static Result<std::unique_ptr<TensorStore>> open_folder(const Folder& dir,
                                                          const std::string& single_file_name);
  static Result<std::unique_ptr<TensorStore>> open_file(const std::string& path);
  static Result<std::unique_ptr<TensorStore>> open_file(const ReadOnlyFile& file,
                                                        const SafetensorsReadOptions& options);

  const TensorInfo* find(const std::string& name) const;
  // The tensor `name` with exactly `shape`; INVALID_ARGUMENT naming it when it is absent (the
  // checkpoint lacks a required tensor) or has another shape or a dtype that is no weight's.
  Result<const TensorInfo*> get(const std::string& name, const std::vector<int64_t>& shape) const;
  std::vector<std::string> names() const;
  size_t size() const { return index_.size(); }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
  std::string source_;  // the folder or file, for messages
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

// Copies a tensor of F32/F16/BF16 into f32. REQUIRES: out has numel() elements; t.data is set.
Status read_as_f32(const TensorInfo& t, float* out);

}  // namespace loraserve::formats
