// Host memory a process may still take: the least of what the machine has free (MemAvailable),
// what its memory cgroup leaves (a container's limit: v2 memory.max of its cgroup and every
// parent, or v1 memory.limit_in_bytes; page cache it could drop, inactive_file, counts as free,
// as the kubelet counts a working set), and its address-space limit (RLIMIT_AS). The memory
// plans size the KV cache by it: by MemAvailable alone, a container with a 16 GiB limit on a
// 128 GiB node planned for the node and was killed by the OOM killer instead of refusing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace loraserve {

struct HostMemory {
  uint64_t available = 0;                 // the least of the bounds below that exist
  uint64_t mem_available = 0;             // /proc/meminfo MemAvailable (or physical memory)
  std::optional<uint64_t> cgroup_left;    // the memory cgroup's limit less its working set
  std::optional<uint64_t> address_space;  // RLIMIT_AS less the current VmSize
};

// Reads the files under `proc` (/proc) and `cgroup_root` (/sys/fs/cgroup); roots other than
// the real ones are for tests. A file that is missing or unreadable leaves its bound out.
HostMemory host_memory(const std::string& proc = "/proc",
                       const std::string& cgroup_root = "/sys/fs/cgroup",
                       std::optional<uint64_t> rlimit_as = std::nullopt);

}  // namespace loraserve
