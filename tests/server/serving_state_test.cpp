#include "server/serving_state.h"

#include <gtest/gtest.h>

#include <memory>

#include "engine/loader.h"

namespace loraserve::server {
namespace {

// The fixture model's engine (tests run from the source root).
engine::Engine* fixture_engine() {
  static std::unique_ptr<engine::Engine> engine = [] {
    kernels::BackendOptions backend;
    backend.device = "cpu";
    backend.cpu_threads = 1;
    auto e = engine::open_engine("tests/reference/fixtures/llama_mha_f32", backend,
                                 engine::EngineOptions{});
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    return e.ok() ? std::move(e).value() : nullptr;
  }();
  return engine.get();
}

TEST(ServingState, RefusesCallsWhileLoadingAndDraining) {
  ASSERT_NE(fixture_engine(), nullptr);
  ServingState state(4);
  EXPECT_EQ(state.begin_call().code(), StatusCode::kUnavailable);
  state.set_engine(fixture_engine());
  ASSERT_TRUE(state.begin_call().ok());
  state.start_draining();
  const Status st = state.begin_call();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  state.end_call();
  EXPECT_EQ(state.calls_in_flight(), 0u);
}

TEST(ServingState, AdmitsAtMostMaxCallsAtOnce) {
  ASSERT_NE(fixture_engine(), nullptr);
  ServingState state(2);
  state.set_engine(fixture_engine());
  ASSERT_TRUE(state.begin_call().ok());
  ASSERT_TRUE(state.begin_call().ok());
  const Status st = state.begin_call();
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(st.message(),
            "2 inference calls are open, the limit (--max-concurrent-streams); retry later");
  EXPECT_EQ(state.calls_in_flight(), 2u);
  state.end_call();
  EXPECT_TRUE(state.begin_call().ok());
  state.end_call();
  state.end_call();
  EXPECT_EQ(state.calls_in_flight(), 0u);
}

}  // namespace
}  // namespace loraserve::server
