#include "server/adapter_root.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace loraserve::server {
namespace {

namespace fs = std::filesystem;

// <tmp>/root/{a, nested/b, link_in -> a, link_out -> <tmp>/outside}, <tmp>/outside.
class AdapterRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "adapter_root_test_XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    base_ = fs::canonical(templ);
    root_ = base_ / "root";
    fs::create_directories(root_ / "a");
    fs::create_directories(root_ / "nested" / "b");
    fs::create_directories(base_ / "outside");
    fs::create_directory_symlink(root_ / "a", root_ / "link_in");
    fs::create_directory_symlink(base_ / "outside", root_ / "link_out");
    auto r = AdapterRoot::create(root_.string());
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    adapter_root_ = std::make_unique<AdapterRoot>(*r);
  }
  void TearDown() override { fs::remove_all(base_); }

  fs::path base_, root_;
  std::unique_ptr<AdapterRoot> adapter_root_;
};

TEST_F(AdapterRootTest, RelativePathsInsideResolveToTheirRealPath) {
  auto a = adapter_root_->resolve("a");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(*a, (root_ / "a").string());
  auto b = adapter_root_->resolve("nested/./b/");
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ(*b, (root_ / "nested" / "b").string());
  auto back_in = adapter_root_->resolve("nested/../a");
  ASSERT_TRUE(back_in.ok()) << back_in.status().to_string();
  EXPECT_EQ(*back_in, (root_ / "a").string());
  auto link = adapter_root_->resolve("link_in");
  ASSERT_TRUE(link.ok()) << link.status().to_string();
  EXPECT_EQ(*link, (root_ / "a").string());
}

TEST_F(AdapterRootTest, AbsolutePathInsideIsAccepted) {
  auto a = adapter_root_->resolve((root_ / "nested" / "b").string());
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(*a, (root_ / "nested" / "b").string());
}

TEST_F(AdapterRootTest, PathsLeadingOutsideArePermissionDenied) {
  for (const std::string& p :
       {std::string("../outside"), std::string("a/../../outside"), (base_ / "outside").string(),
        std::string("/etc"), std::string("link_out"), std::string("link_out/x"),
        std::string("../does_not_exist"), std::string("..")}) {
    auto r = adapter_root_->resolve(p);
    ASSERT_FALSE(r.ok()) << p;
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied)
        << p << ": " << r.status().to_string();
    EXPECT_NE(r.status().message().find(p), std::string::npos) << r.status().message();
  }
}

TEST_F(AdapterRootTest, MissingFolderInsideIsNotFound) {
  auto r = adapter_root_->resolve("missing");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("missing"), std::string::npos);
}

TEST_F(AdapterRootTest, EmptyPathIsInvalid) {
  auto r = adapter_root_->resolve("");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(AdapterRootTest, RelativeNamesPathsInsideTheRoot) {
  EXPECT_EQ(adapter_root_->relative((root_ / "nested" / "b").string()), "nested/b");
  EXPECT_EQ(adapter_root_->relative(root_.string()), ".");
  EXPECT_EQ(adapter_root_->relative((base_ / "outside").string()), (base_ / "outside").string());
  // A sibling whose name starts with the root's is not inside it.
  EXPECT_EQ(adapter_root_->relative(root_.string() + "2/x"), root_.string() + "2/x");
}

TEST(AdapterRootCreate, MissingOrFileRootIsRefused) {
  auto missing = AdapterRoot::create("/nonexistent/adapter/root");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/adapter/root"), std::string::npos);
  auto file = AdapterRoot::create("/proc/self/status");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loraserve::server
