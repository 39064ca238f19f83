// host_memory on made-up /proc and /sys/fs/cgroup trees: MemAvailable alone, a cgroup v2 limit
// on the process's cgroup or a parent (page cache it could drop counts as free), a v1 limit, no
// limit ("max", v1's huge number), and RLIMIT_AS.
#include "common/host_memory.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace loraserve {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kGiB = uint64_t{1} << 30;

class HostMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ls_host_memory_" + std::to_string(getpid()));
    fs::remove_all(root_);
    write("proc/meminfo", "MemTotal:       134217728 kB\nMemAvailable:   100663296 kB\n");
    write("proc/self/status", "Name:\tloraserve\nVmSize:\t 2097152 kB\n");
  }
  void TearDown() override { fs::remove_all(root_); }

  void write(const std::string& rel, const std::string& text) {
    const fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  HostMemory read(std::optional<uint64_t> rlimit = UINT64_MAX) {
    // UINT64_MAX stands for "no RLIMIT_AS" here: it leaves every real bound above it.
    return host_memory((root_ / "proc").string(), (root_ / "cg").string(), rlimit);
  }

  fs::path root_;
};

TEST_F(HostMemoryTest, MemAvailableAloneWithoutACgroup) {
  const HostMemory m = read();
  EXPECT_EQ(m.mem_available, 96 * kGiB);
  EXPECT_FALSE(m.cgroup_left.has_value());
  EXPECT_EQ(m.available, 96 * kGiB);
}

TEST_F(HostMemoryTest, CgroupV2LimitOfTheCgroupOrAParent) {
  write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  write("cg/kubepods/pod1/ctr/memory.max", "max\n");
  write("cg/kubepods/pod1/memory.max", std::to_string(16 * kGiB) + "\n");
  write("cg/kubepods/pod1/memory.current", std::to_string(6 * kGiB) + "\n");
  // 2 GiB of the usage is page cache it could drop.
  write("cg/kubepods/pod1/memory.stat", "anon 1\ninactive_file " + std::to_string(2 * kGiB) + "\n");
  const HostMemory m = read();
  ASSERT_TRUE(m.cgroup_left.has_value());
  EXPECT_EQ(*m.cgroup_left, 12 * kGiB);  // 16 - (6 - 2)
  EXPECT_EQ(m.available, 12 * kGiB);
}

TEST_F(HostMemoryTest, CgroupV2UnlimitedAndV1Limits) {
  write("proc/self/cgroup", "0::/\n");
  write("cg/memory.max", "max\n");
  EXPECT_EQ(read().available, 96 * kGiB);

  // v1 inside a container: the host's path is not there, the container's root holds the limit.
  write("proc/self/cgroup", "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n");
  write("cg/memory/memory.limit_in_bytes", std::to_string(8 * kGiB) + "\n");
  write("cg/memory/memory.usage_in_bytes", std::to_string(3 * kGiB) + "\n");
  write("cg/memory/memory.stat", "total_inactive_file " + std::to_string(kGiB) + "\n");
  EXPECT_EQ(read().available, 6 * kGiB);
  // v1's "no limit" is a huge number.
  write("cg/memory/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_EQ(read().available, 96 * kGiB);
}

TEST_F(HostMemoryTest, AddressSpaceLimit) {
  const HostMemory m = read(10 * kGiB);
  ASSERT_TRUE(m.address_space.has_value());
  EXPECT_EQ(*m.address_space, 8 * kGiB);  // 10 GiB less the 2 GiB mapped
  EXPECT_EQ(m.available, 8 * kGiB);
}

TEST_F(HostMemoryTest, ThisProcessReadsSomething) {
  const HostMemory m = host_memory();
  EXPECT_GT(m.mem_available, 0u);
  EXPECT_GT(m.available, 0u);
  EXPECT_LE(m.available, m.mem_available);
}

}  // namespace
}  // namespace loraserve
