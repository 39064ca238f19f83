#include "common/untrusted_file.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/excerpt.h"

namespace loraserve {
namespace {

std::string_view kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

// The error for a failed open of `shown` (errno `err`).
Status open_error(int err, const std::string& shown) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return not_found_error("{}: no such file", shown);
    case EACCES:
    case EPERM:
      return permission_denied_error("{}: cannot open: {}", shown, std::strerror(err));
    case ELOOP:
      return invalid_argument_error("{}: too many levels of symbolic links", shown);
    case ENAMETOOLONG:
      return invalid_argument_error("{}: the path is too long", shown);
    default:
      return internal_error("{}: cannot open: {}", shown, std::strerror(err));
  }
}

// The real path of the object `fd` refers to, read back from /proc/self/fd.
Result<std::string> fd_real_path(int fd, const std::string& shown) {
  char buf[PATH_MAX + 1];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
  if (n < 0) {
    return failed_precondition_error(
        "{}: cannot check where it leads ({}): confinement to a root needs /proc", shown,
        std::strerror(errno));
  }
  return std::string(buf, static_cast<size_t>(n));
}

// Opens `name` relative to `dirfd` (AT_FDCWD: the working folder) for reading, as the header
// describes: O_PATH first (no side effects, no blocking), the type checked on that descriptor,
// the real path checked against `root` when one is given, then reopened for reading through
// /proc/self/fd (the same inode). Without /proc (and without a root) the file is opened with
// O_NONBLOCK and checked after opening instead.
Result<std::pair<UniqueFd, uint64_t>> open_for_reading(int dirfd, const std::string& name,
                                                       const std::string& shown,
                                                       const std::string& root) {
  UniqueFd path_fd(::openat(dirfd, name.c_str(), O_PATH | O_CLOEXEC));
  if (path_fd.get() < 0) {
    const int err = errno;
    struct stat link {};
    if (err == ENOENT && ::fstatat(dirfd, name.c_str(), &link, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(link.st_mode)) {
      return not_found_error("{} is a link to a file that does not exist", shown);
    }
    return open_error(err, shown);
  }
  struct stat st {};
  if (::fstat(path_fd.get(), &st) != 0) return open_error(errno, shown);
  if (!S_ISREG(st.st_mode)) {
    return invalid_argument_error("{} is {}, not a regular file", shown, kind_of(st.st_mode));
  }
  if (!root.empty()) {
    LS_ASSIGN_OR_RETURN(const std::string real, fd_real_path(path_fd.get(), shown));
    if (!path_is_inside(real, root)) {
      // The root itself is not shown: the message can reach any client that asked for a task.
      return permission_denied_error("{} leads outside the adapter root", shown);
    }
  }
  const std::string proc = "/proc/self/fd/" + std::to_string(path_fd.get());
  UniqueFd fd(::open(proc.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0 && errno == ENOENT && root.empty()) {
    fd = UniqueFd(::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  }
  if (fd.get() < 0) return open_error(errno, shown);
  struct stat opened {};
  if (::fstat(fd.get(), &opened) != 0) return open_error(errno, shown);
  if (!S_ISREG(opened.st_mode) || opened.st_dev != st.st_dev || opened.st_ino != st.st_ino) {
    return invalid_argument_error("{} changed while it was opened", shown);
  }
  return std::make_pair(std::move(fd), static_cast<uint64_t>(opened.st_size));
}

bool is_plain_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

}  // namespace

std::string shown_path(std::string_view path) {
  if (path.size() <= kPathExcerptBytes) return escape_text(path);
  return excerpt(path, kPathExcerptBytes);
}

bool path_is_inside(std::string_view path, std::string_view root) {
  if (root == "/") return !path.empty() && path[0] == '/';
  return path == root ||
         (path.size() > root.size() && path.starts_with(root) && path[root.size()] == '/');
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

Status ReadOnlyFile::read_at(uint64_t offset, void* dst, size_t n) const {
  auto* out = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd_.get(), out, n, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return data_loss_error("{}: read failed at byte {}: {}", name_, offset, std::strerror(errno));
    }
    if (got == 0) {
      return data_loss_error("{}: the file shrank while it was read (ended before byte {})", name_,
                             offset);
    }
    out += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<size_t>(got);
  }
  return ok_status();
}

Result<std::string> ReadOnlyFile::read_all(uint64_t max_bytes, std::string_view limit_name) const {
  if (size_ > max_bytes) {
    return invalid_argument_error("{} is {} bytes, more than the limit of {} bytes ({})", name_,
                                  size_, max_bytes, limit_name);
  }
  std::string text(static_cast<size_t>(size_), '\0');
  LS_RETURN_IF_ERROR(read_at(0, text.data(), text.size()));
  return text;
}

Folder::Folder(UniqueFd fd, std::string path, std::string real_path, std::string root)
    : fd_(std::move(fd)),
      path_(std::move(path)),
      name_(shown_path(path_)),
      real_path_(std::move(real_path)),
      root_(std::move(root)) {}

Result<Folder> Folder::open(const std::string& path, const std::string& root) {
  const std::string shown = shown_path(path);
  if (path.empty()) return invalid_argument_error("the folder path is empty");
  if (path.find('\0') != std::string::npos)
    return invalid_argument_error("{}: the path holds a NUL byte", shown);
  UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
  if (fd.get() < 0) {
    Status st = open_error(errno, shown);
    if (st.code() == StatusCode::kNotFound)
      return not_found_error("folder {} does not exist", shown);
    return st;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return open_error(errno, shown);
  if (!S_ISDIR(st.st_mode))
    return invalid_argument_error("{} is {}, not a folder", shown, kind_of(st.st_mode));
  std::string real;
  if (!root.empty()) {
    LS_ASSIGN_OR_RETURN(real, fd_real_path(fd.get(), shown));
    if (!path_is_inside(real, root)) {
      // The root itself is not shown: the message can reach any client that asked for a task.
      return permission_denied_error("{} leads outside the adapter root", shown);
    }
  } else {
    auto resolved = fd_real_path(fd.get(), shown);
    real = resolved.ok() ? *resolved : path;
  }
  return Folder(std::move(fd), path, std::move(real), root);
}

std::string Folder::file_name(std::string_view file) const {
  if (path_.empty() || path_.back() == '/') return name_ + escape_text(file);
  return name_ + "/" + escape_text(file);
}

Result<ReadOnlyFile> Folder::open_file(std::string_view name) const {
  const std::string shown = file_name(name.substr(0, kPathExcerptBytes));
  if (!is_plain_name(name)) {
    return invalid_argument_error("{}: a file of a folder must be named by a plain file name",
                                  shown);
  }
  LS_ASSIGN_OR_RETURN(auto opened, open_for_reading(fd_.get(), std::string(name), shown, root_));
  return ReadOnlyFile(std::move(opened.first), opened.second, shown);
}

bool Folder::has(std::string_view name) const {
  if (!is_plain_name(name)) return false;
  // Not followed: a broken or looping link is there, and opening it says what is wrong with it
  // (a broken link in a model folder is a broken download, not a file left out on purpose).
  struct stat st {};
  return ::fstatat(fd_.get(), std::string(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

Result<ReadOnlyFile> open_regular_file(const std::string& path) {
  const std::string shown = shown_path(path);
  if (path.empty()) return invalid_argument_error("the file path is empty");
  if (path.find('\0') != std::string::npos)
    return invalid_argument_error("{}: the path holds a NUL byte", shown);
  LS_ASSIGN_OR_RETURN(auto opened, open_for_reading(AT_FDCWD, path, shown, ""));
  return ReadOnlyFile(std::move(opened.first), opened.second, shown);
}

Result<std::string> read_regular_file(const std::string& path, uint64_t max_bytes,
                                      std::string_view limit_name) {
  LS_ASSIGN_OR_RETURN(ReadOnlyFile file, open_regular_file(path));
  return file.read_all(max_bytes, limit_name);
}

}  // namespace loraserve
