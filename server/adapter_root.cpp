#include "server/adapter_root.h"

#include <filesystem>
#include <system_error>

#include "common/excerpt.h"
#include "common/untrusted_file.h"

namespace loraserve::server {

namespace fs = std::filesystem;

Result<AdapterRoot> AdapterRoot::create(const std::string& dir) {
  std::error_code ec;
  const fs::path real = fs::canonical(dir, ec);
  if (ec) return not_found_error("--adapter-root {}: {}", shown_path(dir), ec.message());
  if (!fs::is_directory(real, ec))
    return invalid_argument_error("--adapter-root {} is not a folder", shown_path(dir));
  return AdapterRoot(real.string());
}

bool AdapterRoot::contains(const std::string& real_path) const {
  return path_is_inside(real_path, root_);
}

Result<std::string> AdapterRoot::resolve(const std::string& path) const {
  if (path.empty()) return invalid_argument_error("path is empty: name an adapter folder");
  if (path.find('\0') != std::string::npos)
    return invalid_argument_error("path contains a NUL character");
  const std::string shown = excerpt(path, kPathExcerptBytes);
  const fs::path requested(path);
  const fs::path joined = requested.is_absolute() ? requested : fs::path(root_) / requested;
  // weakly_canonical resolves the existing prefix (symlinks included) and normalizes the rest
  // lexically, so a path that leads outside is refused whether or not its target exists.
  std::error_code ec;
  const fs::path weak = fs::weakly_canonical(joined, ec);
  if (ec) return invalid_argument_error("path {}: {}", shown, ec.message());
  if (!contains(weak.string())) {
    return permission_denied_error("path {} resolves outside the adapter root {}", shown,
                                   shown_path(root_));
  }
  const fs::path real = fs::canonical(joined, ec);
  if (ec) return not_found_error("path {} does not exist under the adapter root", shown);
  // A link swapped in after this look is caught when the folder is opened: Folder::open checks
  // the real path of what it opened against the root.
  if (!contains(real.string())) {
    return permission_denied_error("path {} resolves outside the adapter root {}", shown,
                                   shown_path(root_));
  }
  return real.string();
}

std::string AdapterRoot::relative(const std::string& real_path) const {
  if (!contains(real_path)) return real_path;
  if (real_path == root_) return ".";
  return real_path.substr(root_ == "/" ? 1 : root_.size() + 1);
}

}  // namespace loraserve::server
