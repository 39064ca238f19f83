// AdapterLoader: a served task resolves at once; an unregistered one is loaded from
// `<root>/<task>` once however many requests ask for it at the same time, each getting its own
// lease; what cannot be loaded is refused with the code and file the caller needs, and changes
// nothing; a task for which the host tier has no room waits until a request ends (first parked,
// first loaded), its deadline passes or its caller gives up.
#include "server/adapter_loader.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <future>
#include <thread>

#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"
#include "tests/wait_for.h"

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
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return results_.size();
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
  std::unique_ptr<AdapterLoader> loader(bool on_demand, int32_t max_waiting = 1024) {
    auto root = AdapterRoot::create(dir_.path().string());
    EXPECT_TRUE(root.ok());
    return std::make_unique<AdapterLoader>(registry_.get(), *root, on_demand, max_waiting);
  }
  // A host tier of `slots` adapters, with `tasks` more adapter folders t0, t1...
  void small_host_tier(int32_t slots, int tasks) {
    registry_ = std::make_unique<adapters::AdapterRegistry>(config_, backend_.get(),
                                                            adapters::RegistryOptions{slots, 64});
    for (int i = 0; i < tasks; ++i) {
      testing::write_adapter(testing::make_adapter_spec(config_, 2, 10 + i),
                             dir_.path() / ("t" + std::to_string(i)));
    }
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

TEST_F(AdapterLoaderTest, AFileLinkedOutOfTheRootIsRefusedWithoutShowingTheRoot) {
  testing::TempDir outside;
  testing::write_adapter(testing::make_adapter_spec(config_, 2, 4), outside.path() / "real");
  std::filesystem::create_directory(dir_.path() / "linked");
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors"}) {
    std::filesystem::create_symlink(outside.path() / "real" / file, dir_.path() / "linked" / file);
  }
  auto l = loader(true);
  Answers answers;
  l->resolve("linked", answers.add());
  auto& results = answers.wait_for(1);
  ASSERT_FALSE(results[0].ok());
  const Status& s = results[0].status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();  // a load failure
  EXPECT_NE(s.message().find("linked/adapter_"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("leads outside the adapter root"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(dir_.path().string()), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(outside.path().string()), std::string::npos) << s.message();
  EXPECT_EQ(registry_->size(), 0u);
}

TEST_F(AdapterLoaderTest, ATaskWithNoRoomWaitsUntilARequestEndsFirstParkedFirstLoaded) {
  small_host_tier(1, 3);
  auto l = loader(true);
  Answers first;
  l->resolve("t0", first.add());
  adapters::AdapterLease t0 = std::move(*first.wait_for(1)[0]);  // a request holds t0
  // t1, then t2, find the only slot held: they wait, in that order.
  Answers t1, t2;
  l->resolve("t1", t1.add());
  ASSERT_TRUE(testing::wait_for([&] { return l->tasks_parked() == 1; }));
  l->resolve("t2", t2.add());
  l->resolve("t1", t1.add());  // a second request joins t1's wait
  ASSERT_TRUE(testing::wait_for([&] { return l->tasks_parked() == 2; }));
  EXPECT_EQ(l->requests_waiting(), 3);
  EXPECT_EQ(l->loading_tasks(), (std::vector<std::string>{"t1", "t2"}));
  std::this_thread::sleep_for(2 * AdapterLoader::kSweepPeriod);
  EXPECT_EQ(t1.size() + t2.size(), 0u);  // no deadline, not abandoned: they still wait
  t0 = adapters::AdapterLease();         // t0's request ends: t1 takes its place
  auto& got1 = t1.wait_for(2);
  ASSERT_TRUE(got1[0].ok() && got1[1].ok()) << got1[0].status().to_string();
  EXPECT_EQ((*got1[0])->task_id, "t1");
  EXPECT_EQ(registry_->find("t0"), nullptr);
  EXPECT_EQ(t2.size(), 0u);  // t1 is held now
  got1.clear();              // t1's requests end: t2 loads
  auto& got2 = t2.wait_for(1);
  ASSERT_TRUE(got2[0].ok()) << got2[0].status().to_string();
  EXPECT_EQ((*got2[0])->task_id, "t2");
  EXPECT_EQ(l->parks(), 2u);
  EXPECT_EQ(l->requests_waiting(), 0);
  EXPECT_TRUE(l->loading_tasks().empty());
}

TEST_F(AdapterLoaderTest, AParkedRequestEndsAtItsDeadlineOrWhenItsCallerGivesUp) {
  small_host_tier(1, 2);
  auto l = loader(true);
  Answers first;
  l->resolve("t0", first.add());
  adapters::AdapterLease t0 = std::move(*first.wait_for(1)[0]);
  Answers late, gone, patient;
  std::atomic<bool> abandoned{false};
  const auto t_start = AdapterLoader::Clock::now();
  l->resolve("t1", late.add(), {t_start + std::chrono::milliseconds(200), nullptr});
  l->resolve("t1", gone.add(), {std::nullopt, [&] { return abandoned.load(); }});
  l->resolve("t1", patient.add());
  auto& r = late.wait_for(1);
  EXPECT_EQ(r[0].status().code(), StatusCode::kDeadlineExceeded) << r[0].status().to_string();
  EXPECT_NE(r[0].status().message().find("room in host memory"), std::string::npos);
  EXPECT_GE(AdapterLoader::Clock::now() - t_start, std::chrono::milliseconds(200));
  EXPECT_EQ(gone.size() + patient.size(), 0u);
  abandoned = true;
  EXPECT_EQ(gone.wait_for(1)[0].status().code(), StatusCode::kCancelled);
  EXPECT_EQ(l->requests_waiting(), 1);
  t0 = adapters::AdapterLease();
  auto& p = patient.wait_for(1);
  ASSERT_TRUE(p[0].ok()) << p[0].status().to_string();
  EXPECT_EQ((*p[0])->task_id, "t1");
  EXPECT_EQ(registry_->find("t1")->in_flight.load(), 1);  // only the patient request holds it
}

TEST_F(AdapterLoaderTest, NoWaitWhenWaitingCannotHelpOrTooManyWait) {
  small_host_tier(1, 3);
  {
    // The only slot holds an adapter loaded by Admin: no request's end makes room.
    ASSERT_TRUE(registry_->load("t0", (dir_.path() / "t0").string(), false).ok());
    auto l = loader(true);
    Answers a;
    l->resolve("t1", a.add());
    auto& r = a.wait_for(1);
    EXPECT_EQ(r[0].status().code(), StatusCode::kResourceExhausted) << r[0].status().to_string();
    EXPECT_NE(r[0].status().message().find("loaded by Admin or --preload"), std::string::npos);
    EXPECT_EQ(l->parks(), 0u);
    ASSERT_TRUE(registry_->unload("t0").ok());
  }
  auto l = loader(true, /*max_waiting=*/2);
  Answers first;
  l->resolve("t0", first.add());
  adapters::AdapterLease t0 = std::move(*first.wait_for(1)[0]);
  Answers waiting, refused;
  l->resolve("t1", waiting.add());
  l->resolve("t2", waiting.add());
  l->resolve("t2", refused.add());  // a third request: over max_waiting, refused at once
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused.wait_for(1)[0].status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.wait_for(1)[0].status().message().find("--max-queue"), std::string::npos);
  ASSERT_TRUE(testing::wait_for([&] { return l->tasks_parked() == 2; }));
  // Stopping answers the parked requests; none of them loads.
  l->stop();
  auto& r = waiting.wait_for(2);
  for (auto& x : r) EXPECT_EQ(x.status().code(), StatusCode::kUnavailable);
  t0 = adapters::AdapterLease();
  EXPECT_EQ(registry_->find("t1"), nullptr);
  EXPECT_EQ(registry_->find("t2"), nullptr);
}

TEST_F(AdapterLoaderTest, ManyRequestsOverFewSlotsAllGetTheirAdapter) {
  // 8 tasks over 2 slots, 64 requests from 8 threads, each holding its lease a moment: every
  // request gets its own task's adapter, none is refused, and nothing is left waiting.
  small_host_tier(2, 8);
  auto l = loader(true);
  std::atomic<int> good{0}, bad{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < 8; ++c) {
    threads.emplace_back([&, c] {
      for (int i = 0; i < 8; ++i) {
        const std::string task = "t" + std::to_string((c * 3 + i * 5) % 8);
        std::promise<Result<adapters::AdapterLease>> answer;
        l->resolve(task, [&](Result<adapters::AdapterLease> r) { answer.set_value(std::move(r)); });
        auto r = answer.get_future().get();
        if (r.ok() && (*r)->task_id == task) {
          ++good;
        } else {
          ++bad;
          ADD_FAILURE() << task << ": " << r.status().to_string();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 64);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(l->requests_waiting(), 0);
  EXPECT_LE(registry_->size(), 2u);
}

}  // namespace
}  // namespace loraserve::server
