// Folder / open_regular_file: only regular files are read, whatever the name leads to (FIFOs,
// devices, sockets, folders, links to them), sizes are capped before reading, a file that
// shrinks is DATA_LOSS, and a confined folder refuses anything whose real path leaves its root.
#include "common/untrusted_file.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace loraserve {
namespace {

namespace fs = std::filesystem;

class UntrustedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ls_untrusted_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "root" / "inner");
    fs::create_directories(dir_ / "outside");
    write(dir_ / "root" / "inner" / "a.json", "{\"a\": 1}");
    write(dir_ / "outside" / "secret.json", "{\"secret\": \"do not show\"}");
    root_ = fs::canonical(dir_ / "root").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void write(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary) << text;
  }

  fs::path dir_;
  std::string root_;
};

TEST_F(UntrustedFileTest, ReadsARegularFile) {
  auto folder = Folder::open((dir_ / "root" / "inner").string());
  ASSERT_TRUE(folder.ok()) << folder.status().to_string();
  EXPECT_TRUE(folder->has("a.json"));
  EXPECT_FALSE(folder->has("b.json"));
  auto file = folder->open_file("a.json");
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  EXPECT_EQ(file->size(), 8u);
  auto text = file->read_all(100, "--limit");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "{\"a\": 1}");
  auto whole = read_regular_file((dir_ / "root" / "inner" / "a.json").string(), 100, "--limit");
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(*whole, *text);
}

TEST_F(UntrustedFileTest, MissingIsNotFound) {
  auto folder = Folder::open(dir_.string());
  ASSERT_TRUE(folder.ok());
  auto file = folder->open_file("nothing.json");
  EXPECT_EQ(file.status().code(), StatusCode::kNotFound) << file.status().to_string();
  EXPECT_NE(file.status().message().find("nothing.json"), std::string::npos);
  EXPECT_EQ(Folder::open((dir_ / "nope").string()).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(open_regular_file((dir_ / "nope" / "x").string()).status().code(),
            StatusCode::kNotFound);
}

TEST_F(UntrustedFileTest, ABrokenOrLoopingLinkIsThereAndSaysWhatIsWrong) {
  // A broken link in a model folder (a half-downloaded Hugging Face cache) must not read as a
  // file left out on purpose: generation_config.json's EOS ids would be lost without a word.
  fs::create_symlink(dir_ / "gone.json", dir_ / "root" / "inner" / "broken.json");
  fs::create_symlink("loop.json", dir_ / "root" / "inner" / "loop.json");
  auto folder = Folder::open((dir_ / "root" / "inner").string());
  ASSERT_TRUE(folder.ok());
  EXPECT_TRUE(folder->has("broken.json"));
  EXPECT_TRUE(folder->has("loop.json"));
  auto broken = folder->open_file("broken.json");
  EXPECT_EQ(broken.status().code(), StatusCode::kNotFound) << broken.status().to_string();
  EXPECT_NE(broken.status().message().find("broken.json is a link to a file that does not exist"),
            std::string::npos)
      << broken.status().to_string();
  auto loop = folder->open_file("loop.json");
  EXPECT_EQ(loop.status().code(), StatusCode::kInvalidArgument) << loop.status().to_string();
  EXPECT_NE(loop.status().message().find("symbolic links"), std::string::npos)
      << loop.status().to_string();
}

TEST_F(UntrustedFileTest, RefusesWhatIsNotARegularFileByName) {
  ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0600), 0);
  fs::create_symlink("/dev/zero", dir_ / "zero");
  fs::create_symlink(dir_ / "fifo", dir_ / "link_to_fifo");
  fs::create_directories(dir_ / "sub");
  const int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string sock_path = (dir_ / "sock").string();
  ASSERT_LT(sock_path.size(), sizeof(addr.sun_path));
  std::strcpy(addr.sun_path, sock_path.c_str());
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);

  auto folder = Folder::open(dir_.string());
  ASSERT_TRUE(folder.ok());
  const std::pair<const char*, const char*> cases[] = {{"fifo", "a FIFO"},
                                                       {"zero", "a character device"},
                                                       {"link_to_fifo", "a FIFO"},
                                                       {"sub", "a folder"},
                                                       {"sock", "a socket"}};
  for (const auto& [name, kind] : cases) {
    auto file = folder->open_file(name);
    ASSERT_FALSE(file.ok()) << name;
    EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument) << file.status().to_string();
    EXPECT_NE(file.status().message().find(kind), std::string::npos) << file.status().to_string();
    EXPECT_NE(file.status().message().find(name), std::string::npos) << file.status().to_string();
    auto by_path = open_regular_file((dir_ / name).string());
    EXPECT_EQ(by_path.status().code(), StatusCode::kInvalidArgument) << name;
  }
  auto not_folder = Folder::open((dir_ / "root" / "inner" / "a.json").string());
  EXPECT_EQ(not_folder.status().code(), StatusCode::kInvalidArgument);
  ::close(sock);
}

TEST_F(UntrustedFileTest, RefusesNamesThatAreNotPlain) {
  auto folder = Folder::open((dir_ / "root").string(), root_);
  ASSERT_TRUE(folder.ok());
  for (const char* name :
       {"", ".", "..", "inner/a.json", "../outside/secret.json", "/etc/passwd"}) {
    auto file = folder->open_file(name);
    EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument) << name;
  }
  auto nul = folder->open_file(std::string_view("a\0b", 3));
  EXPECT_EQ(nul.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(UntrustedFileTest, CapsTheSizeBeforeReading) {
  write(dir_ / "big.json", std::string(1000, ' '));
  auto file = open_regular_file((dir_ / "big.json").string());
  ASSERT_TRUE(file.ok());
  auto text = file->read_all(999, "--max-json-bytes");
  EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(text.status().message().find("--max-json-bytes"), std::string::npos);
  EXPECT_NE(text.status().message().find("1000 bytes"), std::string::npos);
  // A sparse file of 1 TiB is refused by its size, without reading it.
  {
    std::ofstream(dir_ / "sparse.json");
    fs::resize_file(dir_ / "sparse.json", 1ull << 40);
  }
  auto sparse = read_regular_file((dir_ / "sparse.json").string(), 1 << 20, "--max-json-bytes");
  EXPECT_EQ(sparse.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(UntrustedFileTest, AFileThatShrinksIsDataLoss) {
  write(dir_ / "shrinks", std::string(4096, 'x'));
  auto file = open_regular_file((dir_ / "shrinks").string());
  ASSERT_TRUE(file.ok());
  fs::resize_file(dir_ / "shrinks", 10);
  auto text = file->read_all(1 << 20, "--limit");
  EXPECT_EQ(text.status().code(), StatusCode::kDataLoss) << text.status().to_string();
  // A file that grows is read up to the size it had when opened.
  write(dir_ / "grows", "abc");
  auto grows = open_regular_file((dir_ / "grows").string());
  ASSERT_TRUE(grows.ok());
  std::ofstream(dir_ / "grows", std::ios::app) << "defgh";
  auto g = grows->read_all(100, "--limit");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g, "abc");
}

TEST_F(UntrustedFileTest, ConfinedFolderRefusesFilesThatLeadOutside) {
  fs::create_symlink(dir_ / "outside" / "secret.json", dir_ / "root" / "inner" / "out.json");
  fs::create_symlink("../../outside/secret.json", dir_ / "root" / "inner" / "rel_out.json");
  fs::create_symlink("a.json", dir_ / "root" / "inner" / "in.json");
  fs::create_symlink("../inner/a.json", dir_ / "root" / "inner" / "up_in.json");
  auto folder = Folder::open((dir_ / "root" / "inner").string(), root_);
  ASSERT_TRUE(folder.ok()) << folder.status().to_string();
  for (const char* name : {"out.json", "rel_out.json"}) {
    auto file = folder->open_file(name);
    EXPECT_EQ(file.status().code(), StatusCode::kPermissionDenied) << file.status().to_string();
    EXPECT_EQ(file.status().message().find("do not show"), std::string::npos);
  }
  for (const char* name : {"in.json", "up_in.json", "a.json"}) {
    auto file = folder->open_file(name);
    ASSERT_TRUE(file.ok()) << name << ": " << file.status().to_string();
    EXPECT_EQ(*file->read_all(100, "--limit"), "{\"a\": 1}");
  }
  // The same folder unconfined reads the link (the model folder's rule).
  auto free_folder = Folder::open((dir_ / "root" / "inner").string());
  ASSERT_TRUE(free_folder.ok());
  EXPECT_TRUE(free_folder->open_file("out.json").ok());
}

TEST_F(UntrustedFileTest, ConfinedFolderMustLieInsideTheRoot) {
  fs::create_directory_symlink(dir_ / "outside", dir_ / "root" / "escape");
  auto escaped = Folder::open((dir_ / "root" / "escape").string(), root_);
  EXPECT_EQ(escaped.status().code(), StatusCode::kPermissionDenied) << escaped.status().to_string();
  auto outside = Folder::open((dir_ / "outside").string(), root_);
  EXPECT_EQ(outside.status().code(), StatusCode::kPermissionDenied);
  auto dotdot = Folder::open((dir_ / "root" / "inner" / ".." / "..").string(), root_);
  EXPECT_EQ(dotdot.status().code(), StatusCode::kPermissionDenied);
  auto root_itself = Folder::open(root_, root_);
  EXPECT_TRUE(root_itself.ok());
  // A folder opened inside the root stays checked after a link is swapped in: the opened folder
  // is what its files are read from.
  fs::create_directories(dir_ / "root" / "swap");
  write(dir_ / "root" / "swap" / "a.json", "{}");
  auto swapped = Folder::open((dir_ / "root" / "swap").string(), root_);
  ASSERT_TRUE(swapped.ok());
  fs::rename(dir_ / "root" / "swap", dir_ / "root" / "old");
  fs::create_directory_symlink(dir_ / "outside", dir_ / "root" / "swap");
  EXPECT_FALSE(swapped->has("secret.json"));
  auto still = swapped->open_file("a.json");
  ASSERT_TRUE(still.ok()) << still.status().to_string();
  EXPECT_EQ(*still->read_all(10, "--limit"), "{}");
}

TEST_F(UntrustedFileTest, LongPathsAreCutInMessages) {
  const std::string long_name(3000, 'q');
  auto file = open_regular_file((dir_ / long_name).string());
  ASSERT_FALSE(file.ok());
  EXPECT_LT(file.status().message().size(), 400u) << file.status().message();
  const std::string weird = (dir_ / "bad\nname\x1b").string();
  auto w = open_regular_file(weird);
  EXPECT_EQ(w.status().message().find('\n'), std::string::npos);
  EXPECT_EQ(w.status().message().find('\x1b'), std::string::npos);
}

}  // namespace
}  // namespace loraserve
