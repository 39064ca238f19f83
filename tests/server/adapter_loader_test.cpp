// AdapterLoader: a served task resolves at once; an unregistered one is loaded from
// `<root>/<task>` once however many requests ask for it at the same time, each getting its own
// lease; what cannot be loaded is refused with the code and file the caller needs, and changes
// nothing.
#include "server/adapter_loader.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <thread>

#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve::server {
namespace {

constexpr const char* kModel = "tests/reference/fixtures/llama_mha_f32";

// Collects the answers of resolve() calls, from whichever thread they come.
class Answers {
 public:
  AdapterLoader::Done add() {
    return [this](Result<adapters::AdapterLease> r) {
      std::lock_guard<std::mutex> lock(mu_);
      results_.push_back(std::move(r));
      cv_.notify_all();
    };
  }
  std::vector<Result<adapters::AdapterLease>>& wait_for(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return results_.size() >= n; });
    return results_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Result<adapters::AdapterLease>> results_;
};

class AdapterLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = *formats::load_model_config(kModel);
    backend_ = kernels::create_cpu_backend(1);
    registry_ = std::make_unique<adapters::AdapterRegistry>(config_, backend_.get(),
                                                            adapters::RegistryOptions{4, 64});
    registry_->set_listener([this](const adapters::RegistryEvent& e) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(e);
    });
    testing::write_adapter(testing::make_adapter_spec(config_, 2, 1), dir_.path() / "good");
    testing::write_adapter(testing::make_adapter_spec(config_, 2, 2), dir_.path() / "other");
    auto bad = testing::make_adapter_spec(config_, 2, 3);
    bad.config["r"] = 3;  // the tensors have rank 2
    testing::write_adapter(bad, dir_.path() / "bad");
  }
  std::unique_ptr<AdapterLoader> loader(bool on_demand) {
    auto root = AdapterRoot::create(dir_.path().string());
    EXPECT_TRUE(root.ok());
    return std::make_unique<AdapterLoader>(registry_.get(), *root, on_demand);
  }
  size_t count(adapters::RegistryEvent::Kind kind) {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<size_t>(std::count_if(events_.begin(), events_.end(),
                                             [&](const auto& e) { return e.kind == kind; }));
  }

  formats::ModelConfig config_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<adapters::AdapterRegistry> registry_;
  testing::TempDir dir_;
  std::mutex mu_;
  std::vector<adapters::RegistryEvent> events_;
};

TEST_F(AdapterLoaderTest, ConcurrentRequestsShareOneLoad) {
  auto l = loader(true);
  Answers answers;
  constexpr int kRequests = 16;
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&] { l->resolve("good", answers.add()); });
  }
  for (auto& t : threads) t.join();
  auto& results = answers.wait_for(kRequests);
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ((*r)->task_id, "good");
  }
  EXPECT_EQ(count(adapters::RegistryEvent::Kind::kLoaded), 1u);
  const adapters::AdapterRef served = registry_->find("good");
  ASSERT_NE(served, nullptr);
  EXPECT_EQ(served->trigger, adapters::LoadTrigger::kOnDemand);
  EXPECT_EQ(served->in_flight.load(), kRequests);  // one lease per request
  results.clear();
  EXPECT_EQ(served->in_flight.load(), 0);
  EXPECT_EQ(l->requests_waiting(), 0);
  EXPECT_TRUE(l->loading_tasks().empty());
}

TEST_F(AdapterLoaderTest, ServedTasksAndTheBaseModelResolveAtOnce) {
  auto l = loader(false);
  ASSERT_TRUE(registry_->load("other", (dir_.path() / "other").string(), false).ok());
  std::optional<Result<adapters::AdapterLease>> got;
  l->resolve("other", [&](Result<adapters::AdapterLease> r) { got = std::move(r); });
  ASSERT_TRUE(got.has_value() && got->ok());  // on the caller's thread, before resolve returns
  EXPECT_EQ((**got)->task_id, "other");
  got.reset();
  l->resolve("", [&](Result<adapters::AdapterLease> r) { got = std::move(r); });
  ASSERT_TRUE(got.has_value() && got->ok());
  EXPECT_FALSE(**got);  // the base model holds no adapter
  got.reset();
  l->resolve("good", [&](Result<adapters::AdapterLease> r) { got = std::move(r); });
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->status().code(), StatusCode::kNotFound);  // on-demand is off
  EXPECT_EQ(registry_->find("good"), nullptr);
}

TEST_F(AdapterLoaderTest, RefusesWhatCannotBeLoaded) {
  auto l = loader(true);
  Answers answers;
  const std::vector<std::pair<std::string, StatusCode>> cases = {
      {"bad", StatusCode::kInvalidArgument},     {"missing", StatusCode::kNotFound},
      {".", StatusCode::kInvalidArgument},       {"..", StatusCode::kInvalidArgument},
      {"../good", StatusCode::kInvalidArgument}, {"a/b", StatusCode::kInvalidArgument},
  };
  for (const auto& [task, code] : cases) l->resolve(task, answers.add());
  auto& results = answers.wait_for(cases.size());
  std::map<StatusCode, int> codes;
  for (auto& r : results) {
    ASSERT_FALSE(r.ok());
    ++codes[r.status().code()];
    // A client never learns where the adapter root lives.
    EXPECT_EQ(r.status().message().find(dir_.path().string()), std::string::npos)
        << r.status().message();
  }
  EXPECT_EQ(codes[StatusCode::kInvalidArgument], 5);
  EXPECT_EQ(codes[StatusCode::kNotFound], 1);
  EXPECT_EQ(registry_->size(), 0u);
  EXPECT_EQ(count(adapters::RegistryEvent::Kind::kLoadFailed), 1u);  // only "bad" was read
  bool named = false;
  for (auto& r : results) {
    named |= r.status().message().find("bad/adapter_") != std::string::npos;
  }
  EXPECT_TRUE(named) << "the error for 'bad' names the file, relative to the root";
}

}  // namespace
}  // namespace loraserve::server
