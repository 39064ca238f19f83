// AdapterRoot: the folder that Admin.LoadAdapter paths are confined to. A requested path is
// resolved to its real path (symlinks and `..` followed) and refused unless it lies inside the
// root's real path. Immutable after create(); thread-safe.
#pragma once

#include <string>

#include "common/status.h"

namespace loraserve::server {

class AdapterRoot {
 public:
  // `dir` must be an existing folder; its real path becomes the root.
  static Result<AdapterRoot> create(const std::string& dir);

  // The real path of `path` (relative to the root, or absolute), when it lies inside the root.
  // Errors: PERMISSION_DENIED (resolves outside the root: `..`, an absolute path elsewhere, a
  // symlink that leads out), NOT_FOUND (inside the root but absent), INVALID_ARGUMENT (empty).
  Result<std::string> resolve(const std::string& path) const;
  // `real_path` relative to the root ("." for the root itself); other paths are returned as is.
  std::string relative(const std::string& real_path) const;

  const std::string& path() const { return root_; }

 private:
  explicit AdapterRoot(std::string root) : root_(std::move(root)) {}
  bool contains(const std::string& real_path) const;

  std::string root_;  // real path, no trailing slash (but "/" itself)
};

}  // namespace loraserve::server
