// Opening and reading files that anyone may have written: model folders, adapter folders an
// admin names, --config. Every file is opened without side effects first (O_PATH), checked with
// fstat to be a regular file (a FIFO, a device, a socket or a folder is refused by name, so a
// symlink to /dev/zero or a FIFO that never ends is caught before a byte is read), and only then
// opened for reading, through the same inode. Sizes are known before reading, callers check
// them against their caps, and no read goes past the size seen at open.
//
// Confinement: a Folder opened with a root (a real path) refuses, with PERMISSION_DENIED, a
// folder or file whose real path lies outside it. The check is made on the object actually
// opened (its path read back from /proc/self/fd), so swapping a symlink in between the check
// and the read gains nothing. Symlinks that stay inside the root are followed (the Hugging Face
// cache links snapshot files to blobs). Confinement needs /proc.
//
// Files and folders are move-only handles that close their descriptor; thread-compatible (const
// methods may be called from several threads).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace loraserve {

// A path as messages show it: escaped (excerpt.h), and cut to kPathExcerptBytes.
std::string shown_path(std::string_view path);

// An owned file descriptor; -1 when empty.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// A regular file opened for reading, with the size it had when opened.
class ReadOnlyFile {
 public:
  // `fd`: opened for reading, of a regular file of `size` bytes; `name`: for messages.
  ReadOnlyFile(UniqueFd fd, uint64_t size, std::string name)
      : fd_(std::move(fd)), size_(size), name_(std::move(name)) {}

  // The path as messages show it (shown_path of the path it was opened by).
  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_.get(); }

  // Reads exactly `n` bytes at `offset`. REQUIRES: offset + n <= size(). A file that shrank
  // since it was opened is DATA_LOSS.
  Status read_at(uint64_t offset, void* dst, size_t n) const;
  // The whole file. INVALID_ARGUMENT, naming `limit_name` (the flag that sets the cap), when it
  // is larger than `max_bytes`.
  Result<std::string> read_all(uint64_t max_bytes, std::string_view limit_name) const;

 private:
  UniqueFd fd_;
  uint64_t size_ = 0;
  std::string name_;
};

// A folder whose files are read as untrusted input, optionally confined to a root.
class Folder {
 public:
  // Opens the folder `path`. With `root` (a real path, no trailing slash), the folder's real
  // path must lie inside it, and so must every file opened through the folder. NOT_FOUND when
  // absent, INVALID_ARGUMENT when not a folder, PERMISSION_DENIED when outside `root`.
  static Result<Folder> open(const std::string& path, const std::string& root = "");

  // Opens the regular file `name` (a plain file name: no '/', not "." or "..").
  // NOT_FOUND when absent; INVALID_ARGUMENT when it is not a regular file or `name` is not a
  // plain name; PERMISSION_DENIED when it leads outside the root or cannot be read.
  Result<ReadOnlyFile> open_file(std::string_view name) const;
  // Whether `name` exists in the folder; a link counts even when broken or looping (opening it
  // then says so).
  bool has(std::string_view name) const;

  // The path given to open(), and how messages show it and its files.
  const std::string& path() const { return path_; }
  const std::string& name() const { return name_; }
  std::string file_name(std::string_view file) const;
  // The folder's real path (read back from the opened folder).
  const std::string& real_path() const { return real_path_; }

 private:
  Folder(UniqueFd fd, std::string path, std::string real_path, std::string root);

  UniqueFd fd_;  // O_PATH
  std::string path_;
  std::string name_;
  std::string real_path_;
  std::string root_;  // "" when unconfined
};

// Opens the regular file at `path` (relative to the working folder, or absolute), unconfined,
// with the checks Folder::open_file makes.
Result<ReadOnlyFile> open_regular_file(const std::string& path);
// open_regular_file + read_all.
Result<std::string> read_regular_file(const std::string& path, uint64_t max_bytes,
                                      std::string_view limit_name);

// Whether the real path `path` is `root` or lies below it. Both are real paths.
bool path_is_inside(std::string_view path, std::string_view root);

}  // namespace loraserve
