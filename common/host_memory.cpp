#include "common/host_memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace loraserve {
namespace {

namespace fs = std::filesystem;

// The first line of a small file; nullopt when it cannot be read.
std::optional<std::string> first_line(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

std::optional<uint64_t> parse_u64(std::string_view text) {
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n')) text.remove_suffix(1);
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return v;
}

// `key value` lines (memory.stat, /proc/meminfo's "Key: value kB"): the value of `key`.
std::optional<uint64_t> keyed_value(const fs::path& path, std::string_view key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string k;
    uint64_t v = 0;
    if (fields >> k >> v && k == key) return v;
  }
  return std::nullopt;
}

// What a cgroup folder's limit leaves: limit - (usage - inactive_file); nullopt without a limit.
std::optional<uint64_t> left_under(const fs::path& dir, bool v2) {
  const auto limit = first_line(dir / (v2 ? "memory.max" : "memory.limit_in_bytes"));
  if (!limit) return std::nullopt;
  const auto bytes = parse_u64(*limit);  // v2 writes "max" for none
  // v1 writes a huge page-aligned number for none.
  if (!bytes || *bytes >= (uint64_t{1} << 62)) return std::nullopt;
  const auto usage = first_line(dir / (v2 ? "memory.current" : "memory.usage_in_bytes"));
  uint64_t used = usage ? parse_u64(*usage).value_or(0) : 0;
  const uint64_t cache =
      keyed_value(dir / "memory.stat", v2 ? "inactive_file" : "total_inactive_file").value_or(0);
  used -= std::min(used, cache);
  return *bytes - std::min(*bytes, used);
}

// The tightest limit of this process's memory cgroup and its parents.
std::optional<uint64_t> cgroup_left(const std::string& proc, const std::string& root) {
  std::ifstream in(fs::path(proc) / "self" / "cgroup");
  std::string line;
  std::optional<uint64_t> least;
  auto take = [&](std::optional<uint64_t> v) {
    if (v) least = least ? std::min(*least, *v) : *v;
  };
  while (std::getline(in, line)) {
    // "0::/path" (v2) or "N:memory:/path" (v1; controllers may be listed together).
    const size_t a = line.find(':');
    const size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const bool v2 = line.substr(0, a) == "0" && controllers.empty();
    bool memory = v2;
    std::istringstream names(controllers);
    for (std::string name; std::getline(names, name, ',');) memory = memory || name == "memory";
    if (!memory) continue;
    const fs::path base = v2 ? fs::path(root) : fs::path(root) / "memory";
    fs::path rel = fs::path(line.substr(b + 1)).relative_path();
    // The cgroup and each parent up to the root: a limit may sit on any of them. Inside a
    // container the path may name the host's hierarchy, which the container does not see; its
    // own root is then the folder that holds the limit.
    for (;;) {
      take(left_under(base / rel, v2));
      if (rel.empty()) break;
      rel = rel.parent_path();
    }
  }
  return least;
}

}  // namespace

HostMemory host_memory(const std::string& proc, const std::string& cgroup_root,
                       std::optional<uint64_t> rlimit_as) {
  HostMemory m;
  const auto kib = keyed_value(fs::path(proc) / "meminfo", "MemAvailable:");
  m.mem_available = kib ? *kib * 1024
                        : static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
                              static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  m.cgroup_left = cgroup_left(proc, cgroup_root);
  if (!rlimit_as) {
    rlimit r{};
    if (getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY) rlimit_as = r.rlim_cur;
  }
  if (rlimit_as) {
    const uint64_t vm_kib = keyed_value(fs::path(proc) / "self" / "status", "VmSize:").value_or(0);
    m.address_space = *rlimit_as - std::min(*rlimit_as, vm_kib * 1024);
  }
  m.available = m.mem_available;
  if (m.cgroup_left) m.available = std::min(m.available, *m.cgroup_left);
  if (m.address_space) m.available = std::min(m.available, *m.address_space);
  return m;
}

}  // namespace loraserve
