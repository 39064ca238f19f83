// ServerMetrics: what a known set of requests and engine stats becomes in the exposition, read
// back by the reference parser: per-task counters and histogram counts, server-wide gauges, the
// vLLM names a Gateway API Inference Extension endpoint picker reads, the LoRA info gauge (its
// value moves only when its labels change), and the cap on tasks with series of their own.
#include "server/server_metrics.h"

#include <gtest/gtest.h>

#include <thread>

#include "tests/server/exposition_parser.h"

namespace loraserve::server {
namespace {

using nlohmann::json;
using testing::sample;

std::unique_ptr<ServerMetrics> make(int32_t max_tasks = 256) {
  auto m = ServerMetrics::create(MetricsOptions{max_tasks});
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return std::move(m).value();
}

FinishedRequest finished(engine::FinishReason reason, int32_t tokens, double ttft, double e2e) {
  FinishedRequest r;
  r.reason = reason;
  r.completion_tokens = tokens;
  r.scheduled = true;
  r.queue_seconds = ttft / 2;
  r.ttft_seconds = ttft;
  r.e2e_seconds = e2e;
  return r;
}

TEST(ServerMetricsTest, PerTaskSeriesCountWhatWasRecorded) {
  if (!testing::have_reference_parser()) GTEST_SKIP() << "no python3-prometheus-client";
  auto m = make();
  TaskMetrics& a = m->task("alpha");
  TaskMetrics& base = m->task("");
  EXPECT_EQ(&m->task("alpha"), &a);  // one lookup per request, the same series every time
  ServerMetrics::request_admitted(a, 10);
  ServerMetrics::tokens_generated(a, 4);
  ServerMetrics::request_finished(a, finished(engine::FinishReason::kLength, 4, 0.02, 0.05));
  ServerMetrics::request_admitted(a, 7);
  ServerMetrics::tokens_generated(a, 1);
  ServerMetrics::request_finished(a, finished(engine::FinishReason::kEos, 1, 0.03, 0.03));
  ServerMetrics::request_admitted(base, 3);
  FinishedRequest never_ran;  // cancelled before its first step
  never_ran.reason = engine::FinishReason::kCancelled;
  never_ran.e2e_seconds = 0.001;
  ServerMetrics::request_finished(base, never_ran);
  ServerMetrics::request_failed(base, StatusCode::kCancelled);
  ServerMetrics::request_failed(m->unknown_task(), StatusCode::kNotFound);
  ServerMetrics::request_failed(a, StatusCode::kInvalidArgument);

  engine::EngineStats s;
  s.running = 2;
  s.waiting = 3;
  s.kv_blocks_total = 100;
  s.kv_blocks_free = 75;
  s.preemptions = 4;
  s.steps = 50;
  s.adapter_slots_total = 8;
  s.adapter_slots_used = 2;
  s.adapter_loads = 5;
  s.adapter_evictions = 1;
  ServerGauges g;
  g.requests_loading_adapter = 1;
  g.preparing_bytes = 4096;
  g.requests_waiting_to_prepare = 3;
  g.host_adapters = 6;
  g.max_host_adapters = 32;
  g.running_tasks = {"alpha", "beta"};
  g.waiting_tasks = {"gamma"};
  auto p = testing::parse_exposition(m->render(&s, g));
  ASSERT_TRUE(p.ok()) << p.status().to_string();

  const json ta = {{"task", "alpha"}};
  const json tb = {{"task", ""}};
  auto reqs = [&](const char* task, const char* reason) {
    return sample(*p, "loraserve_requests_total", "loraserve_requests_total",
                  {{"task", task}, {"finish_reason", reason}});
  };
  EXPECT_EQ(reqs("alpha", "length"), "1.0");
  EXPECT_EQ(reqs("alpha", "eos"), "1.0");
  EXPECT_EQ(reqs("alpha", "stop"), "0.0");  // every finish reason is there from the start
  EXPECT_EQ(reqs("", "cancelled"), "1.0");
  EXPECT_EQ(sample(*p, "loraserve_prompt_tokens_total", "loraserve_prompt_tokens_total", ta),
            "17.0");
  EXPECT_EQ(
      sample(*p, "loraserve_generation_tokens_total", "loraserve_generation_tokens_total", ta),
      "5.0");
  EXPECT_EQ(sample(*p, "loraserve_prompt_tokens_total", "loraserve_prompt_tokens_total", tb),
            "3.0");
  auto count = [&](const char* family, const json& labels) {
    return sample(*p, family, std::string(family) + "_count", labels);
  };
  EXPECT_EQ(count("loraserve_e2e_request_latency_seconds", ta), "2.0");
  EXPECT_EQ(count("loraserve_time_to_first_token_seconds", ta), "2.0");
  EXPECT_EQ(count("loraserve_time_per_output_token_seconds", ta), "1.0");  // 2+ tokens only
  EXPECT_EQ(count("loraserve_request_queue_time_seconds", ta), "2.0");
  EXPECT_EQ(count("loraserve_e2e_request_latency_seconds", tb), "1.0");
  EXPECT_EQ(count("loraserve_time_to_first_token_seconds", tb), "0.0");
  EXPECT_EQ(count("loraserve_request_queue_time_seconds", tb), "0.0");  // never scheduled
  // TPOT of the 4-token request: (0.05 - 0.02) / 3.
  EXPECT_DOUBLE_EQ(std::stod(sample(*p, "loraserve_time_per_output_token_seconds",
                                    "loraserve_time_per_output_token_seconds_sum", ta)),
                   (0.05 - 0.02) / 3);
  auto errors = [&](const char* task, const char* code) {
    return sample(*p, "loraserve_request_errors_total", "loraserve_request_errors_total",
                  {{"task", task}, {"code", code}});
  };
  EXPECT_EQ(errors("", "CANCELLED"), "1.0");
  EXPECT_EQ(errors("(unknown)", "NOT_FOUND"), "1.0");
  EXPECT_EQ(errors("alpha", "INVALID_ARGUMENT"), "1.0");

  auto gauge = [&](const char* name, const json& labels = json::object()) {
    return sample(*p, name, name, labels);
  };
  EXPECT_EQ(gauge("loraserve_num_requests_running"), "2.0");
  EXPECT_EQ(gauge("loraserve_num_requests_waiting"), "4.0");  // 3 queued + 1 loading its adapter
  EXPECT_EQ(gauge("loraserve_num_requests_loading_adapter"), "1.0");
  EXPECT_EQ(gauge("loraserve_preparing_bytes"), "4096.0");
  EXPECT_EQ(gauge("loraserve_num_requests_waiting_to_prepare"), "3.0");
  EXPECT_EQ(gauge("loraserve_kv_cache_blocks_used"), "25.0");
  EXPECT_EQ(gauge("loraserve_kv_cache_blocks_total"), "100.0");
  EXPECT_EQ(gauge("loraserve_kv_cache_usage_ratio"), "0.25");
  EXPECT_EQ(gauge("loraserve_adapters_loaded", {{"tier", "device"}}), "2.0");
  EXPECT_EQ(gauge("loraserve_adapters_loaded", {{"tier", "host"}}), "6.0");
  EXPECT_EQ(gauge("loraserve_adapter_capacity", {{"tier", "device"}}), "8.0");
  EXPECT_EQ(gauge("loraserve_adapter_capacity", {{"tier", "host"}}), "32.0");
  EXPECT_EQ(
      sample(*p, "loraserve_preemptions_total", "loraserve_preemptions_total", json::object()),
      "4.0");
  EXPECT_EQ(sample(*p, "loraserve_adapter_device_loads_total",
                   "loraserve_adapter_device_loads_total", json::object()),
            "5.0");
  // The names an endpoint picker reads by default.
  EXPECT_EQ(gauge("vllm:num_requests_running"), "2.0");
  EXPECT_EQ(gauge("vllm:num_requests_waiting"), "4.0");
  EXPECT_EQ(gauge("vllm:gpu_cache_usage_perc"), "0.25");
  EXPECT_EQ(gauge("vllm:kv_cache_usage_perc"), "0.25");
  const json lora = {{"running_lora_adapters", "alpha,beta"},
                     {"waiting_lora_adapters", "gamma"},
                     {"max_lora", "0"}};  // set_model_info was not called
  for (const char* name : {"loraserve_lora_requests_info", "vllm:lora_requests_info"}) {
    const std::string v = gauge(name, lora);
    ASSERT_EQ(v.find("(no"), std::string::npos) << v;
    EXPECT_GT(std::stod(v), 1.7e9) << name;  // a Unix time
  }
  ASSERT_EQ((*p)["families"]["vllm:lora_requests_info"]["samples"].size(), 1u);
}

TEST(ServerMetricsTest, LoraInfoValueIsTheTimeOfTheLastChange) {
  if (!testing::have_reference_parser()) GTEST_SKIP() << "no python3-prometheus-client";
  auto m = make();
  engine::EngineStats s;
  ServerGauges g;
  g.running_tasks = {"a"};
  auto value = [&]() {
    auto p = testing::parse_exposition(m->render(&s, g));
    EXPECT_TRUE(p.ok()) << p.status().to_string();
    const auto& samples = (*p)["families"]["loraserve_lora_requests_info"]["samples"];
    EXPECT_EQ(samples.size(), 1u);
    return std::make_pair(samples[0][1], std::stod(samples[0][2].get<std::string>()));
  };
  const auto first = value();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(value(), first);  // nothing changed: same labels, same time
  g.waiting_tasks = {"b", "c"};
  const auto second = value();
  EXPECT_EQ(second.first["waiting_lora_adapters"], "b,c");
  EXPECT_GT(second.second, first.second);
}

TEST(ServerMetricsTest, TasksPastTheLimitShareOneSeries) {
  auto m = make(2);
  TaskMetrics& a = m->task("a");
  TaskMetrics& b = m->task("b");
  TaskMetrics& c = m->task("c");
  TaskMetrics& d = m->task("d");
  EXPECT_EQ(a.task_id, "a");
  EXPECT_EQ(b.task_id, "b");
  EXPECT_EQ(c.task_id, "(other)");
  EXPECT_EQ(&c, &d);
  EXPECT_EQ(m->task("").task_id, "");  // the base model never counts against the limit
  ServerMetrics::request_admitted(c, 5);
  ServerMetrics::request_finished(d, finished(engine::FinishReason::kStop, 2, 0.1, 0.2));
  const auto totals = m->task_totals();
  ASSERT_EQ(totals.size(), 1u);
  EXPECT_EQ(totals[0].task_id, "(other)");
  EXPECT_EQ(totals[0].requests, 1u);
  EXPECT_EQ(totals[0].prompt_tokens, 5u);
  EXPECT_EQ(totals[0].finish_reasons.at("stop"), 1u);
  EXPECT_FALSE(ServerMetrics::create(MetricsOptions{0}).ok());
}

TEST(ServerMetricsTest, RegistryEventsCountLoadsAndEvictions) {
  if (!testing::have_reference_parser()) GTEST_SKIP() << "no python3-prometheus-client";
  auto m = make();
  using K = adapters::RegistryEvent::Kind;
  using T = adapters::LoadTrigger;
  m->adapter_event({K::kLoaded, "a", T::kExplicit, 0.004});
  m->adapter_event({K::kLoaded, "b", T::kOnDemand, 0.012});
  m->adapter_event({K::kLoaded, "c", T::kOnDemand, 0.3});
  m->adapter_event({K::kLoadFailed, "d", T::kOnDemand, 0.001});
  m->adapter_event({K::kEvicted, "b", T::kOnDemand, 0.0});
  const AdapterLoadTotals t = m->adapter_totals();
  EXPECT_EQ(t.host_loads, 3u);
  EXPECT_EQ(t.on_demand_loads, 2u);
  EXPECT_EQ(t.host_evictions, 1u);
  EXPECT_EQ(t.load_failures, 1u);
  auto p = testing::parse_exposition(m->render(nullptr, ServerGauges{}));
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  const json od = {{"trigger", "on_demand"}};
  EXPECT_EQ(
      sample(*p, "loraserve_adapter_host_loads_total", "loraserve_adapter_host_loads_total", od),
      "2.0");
  EXPECT_EQ(
      sample(*p, "loraserve_adapter_load_seconds", "loraserve_adapter_load_seconds_count", od),
      "2.0");
  EXPECT_EQ(sample(*p, "loraserve_adapter_load_seconds", "loraserve_adapter_load_seconds_bucket",
                   {{"trigger", "on_demand"}, {"le", "0.02"}}),
            "1.0");
  EXPECT_EQ(sample(*p, "loraserve_adapter_host_evictions_total",
                   "loraserve_adapter_host_evictions_total", json::object()),
            "1.0");
  EXPECT_EQ(sample(*p, "loraserve_adapter_load_failures_total",
                   "loraserve_adapter_load_failures_total", od),
            "1.0");
}

}  // namespace
}  // namespace loraserve::server
