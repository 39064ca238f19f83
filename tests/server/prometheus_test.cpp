// The Prometheus module: the exact text it writes for counters, gauges and histograms (HELP and
// TYPE lines, label escaping, cumulative buckets with +Inf, _sum, _count), what registration
// refuses, that recording from many threads loses nothing, and that the independent reference
// parser (python3-prometheus-client) reads back every name, label and value written.
#include "server/prometheus.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>

#include "tests/server/exposition_parser.h"

namespace loraserve::server::prometheus {
namespace {

TEST(PrometheusTest, WritesTheTextFormat) {
  Registry r;
  auto* requests = *r.counter("app_requests_total", "Requests.\nSecond \\ line.", {"task", "code"});
  requests->with({"a", "OK"}).inc(3);
  requests->with({"b\"q\\\nx", "NOT_FOUND"}).inc();
  auto* temp = *r.gauge("app_temperature", "A gauge.");
  temp->get().set(-1.5);
  auto* lat = *r.histogram("app_latency_seconds", "Latency.", {"task"}, {0.125, 1.0, 2.5});
  Histogram& h = lat->with({"a"});
  for (double v : {0.0625, 0.125, 0.25, 1.0, 3.0}) h.observe(v);
  EXPECT_EQ(r.render(),
            "# HELP app_requests_total Requests.\\nSecond \\\\ line.\n"
            "# TYPE app_requests_total counter\n"
            "app_requests_total{task=\"a\",code=\"OK\"} 3\n"
            "app_requests_total{task=\"b\\\"q\\\\\\nx\",code=\"NOT_FOUND\"} 1\n"
            "# HELP app_temperature A gauge.\n"
            "# TYPE app_temperature gauge\n"
            "app_temperature -1.5\n"
            "# HELP app_latency_seconds Latency.\n"
            "# TYPE app_latency_seconds histogram\n"
            "app_latency_seconds_bucket{task=\"a\",le=\"0.125\"} 2\n"
            "app_latency_seconds_bucket{task=\"a\",le=\"1\"} 4\n"
            "app_latency_seconds_bucket{task=\"a\",le=\"2.5\"} 4\n"
            "app_latency_seconds_bucket{task=\"a\",le=\"+Inf\"} 5\n"
            "app_latency_seconds_sum{task=\"a\"} 4.4375\n"
            "app_latency_seconds_count{task=\"a\"} 5\n");
}

TEST(PrometheusTest, FormatsValues) {
  EXPECT_EQ(format_value(0.0), "0");
  EXPECT_EQ(format_value(42.0), "42");
  EXPECT_EQ(format_value(0.001), "0.001");
  EXPECT_EQ(format_value(1e-7), "1e-07");
  EXPECT_EQ(format_value(1712345678.25), "1712345678.25");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
  EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "\"a\\\\b\\\"c\\nd\"");
  EXPECT_EQ(escape_help("x\"y\\z\n"), "x\"y\\\\z\\n");
}

TEST(PrometheusTest, RefusesBadDefinitions) {
  Registry r;
  EXPECT_EQ(r.counter("no_suffix", "h").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.gauge("9starts_with_digit", "h").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.gauge("has-dash", "h").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.gauge("ok", "h", {"__reserved"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.gauge("ok2", "h", {"a:b"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.gauge("ok3", "h", {"a", "a"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.histogram("h1", "h", {"le"}, {1.0}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.histogram("h2", "h", {}, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.histogram("h3", "h", {}, {1.0, 1.0}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.histogram("h4", "h", {}, {1.0, std::nan("")}).status().code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(r.gauge("name:with_colon", "h").ok());
  EXPECT_EQ(r.gauge("name:with_colon", "h").status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(r.render(), "# HELP name:with_colon h\n# TYPE name:with_colon gauge\n");
}

TEST(PrometheusTest, ReplaceAllKeepsOneSeries) {
  Registry r;
  auto* info = *r.gauge("lora_requests_info", "h", {"running", "waiting"});
  info->replace_all({"a,b", ""}, 10.0);
  info->replace_all({"a", "c"}, 11.0);
  EXPECT_EQ(info->series(), (std::vector<std::vector<std::string>>{{"a", "c"}}));
  EXPECT_EQ(info->with({"a", "c"}).value(), 11.0);
}

TEST(PrometheusTest, ConcurrentRecordingLosesNothing) {
  Registry r;
  auto* c = *r.counter("c_total", "h", {"t"});
  auto* h = *r.histogram("h_seconds", "h", {"t"}, {0.5, 1.5});
  constexpr int kThreads = 8, kEach = 20000;
  std::vector<std::thread> threads;
  std::atomic<bool> scraping{true};
  std::thread scraper([&] {
    while (scraping.load()) {
      const std::string text = r.render();
      ASSERT_FALSE(text.empty());
    }
  });
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Counter& mine = c->with({std::to_string(i % 2)});
      Histogram& hist = h->with({"x"});
      for (int k = 0; k < kEach; ++k) {
        mine.inc();
        hist.observe(k % 2 == 0 ? 1.0 : 2.0);
      }
    });
  }
  for (auto& t : threads) t.join();
  scraping.store(false);
  scraper.join();
  EXPECT_EQ(c->with({"0"}).value() + c->with({"1"}).value(),
            static_cast<uint64_t>(kThreads * kEach));
  const Histogram::Snapshot s = h->with({"x"}).snapshot();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{0, kThreads * kEach / 2, kThreads * kEach}));
  EXPECT_DOUBLE_EQ(s.sum, 1.5 * kThreads * kEach);
}

TEST(PrometheusTest, TheReferenceParserReadsItBack) {
  if (!testing::have_reference_parser())
    GTEST_SKIP() << "no python3 with prometheus_client (apt-get install python3-prometheus-client)";
  Registry r;
  auto* c = *r.counter("loraserve_requests_total", "Requests \\ by \"task\".\nMore.",
                       {"task", "finish_reason"});
  const std::string nasty = "we\"ird\\task\nname";
  c->with({nasty, "length"}).inc(7);
  c->with({"", "eos"}).inc(2);
  auto* g = *r.gauge("vllm:num_requests_waiting", "Waiting.");
  g->get().set(3);
  auto* inf = *r.gauge("odd_values", "h", {"k"});
  inf->with({"inf"}).set(std::numeric_limits<double>::infinity());
  inf->with({"nan"}).set(std::nan(""));
  inf->with({"small"}).set(1.25e-9);
  auto* h = *r.histogram("ttft_seconds", "h", {"task"}, {0.001, 0.5, 10.0});
  for (double v : {0.0005, 0.001, 0.3, 11.0}) h->with({nasty}).observe(v);
  h->with({""});  // a series with no observations yet
  auto parsed = testing::parse_exposition(r.render());
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  const auto& fams = (*parsed)["families"];
  EXPECT_EQ(fams.size(), 4u);
  EXPECT_EQ(fams["loraserve_requests_total"]["type"], "counter");
  EXPECT_EQ(fams["loraserve_requests_total"]["help"], "Requests \\ by \"task\".\nMore.");
  using nlohmann::json;
  EXPECT_EQ(testing::sample(*parsed, "loraserve_requests_total", "loraserve_requests_total",
                            json{{"task", nasty}, {"finish_reason", "length"}}),
            "7.0");
  EXPECT_EQ(testing::sample(*parsed, "loraserve_requests_total", "loraserve_requests_total",
                            json{{"task", ""}, {"finish_reason", "eos"}}),
            "2.0");
  EXPECT_EQ(testing::sample(*parsed, "vllm:num_requests_waiting", "vllm:num_requests_waiting",
                            json::object()),
            "3.0");
  EXPECT_EQ(testing::sample(*parsed, "odd_values", "odd_values", json{{"k", "inf"}}), "+Inf");
  EXPECT_EQ(testing::sample(*parsed, "odd_values", "odd_values", json{{"k", "nan"}}), "NaN");
  EXPECT_EQ(testing::sample(*parsed, "odd_values", "odd_values", json{{"k", "small"}}), "1.25e-09");
  const json t = {{"task", nasty}};
  auto bucket = [&](const char* le) {
    json l = t;
    l["le"] = le;
    return testing::sample(*parsed, "ttft_seconds", "ttft_seconds_bucket", l);
  };
  EXPECT_EQ(bucket("0.001"), "2.0");  // 0.0005 and 0.001 (le is inclusive)
  EXPECT_EQ(bucket("0.5"), "3.0");
  EXPECT_EQ(bucket("10"), "3.0");
  EXPECT_EQ(bucket("+Inf"), "4.0");
  EXPECT_EQ(testing::sample(*parsed, "ttft_seconds", "ttft_seconds_count", t), "4.0");
  EXPECT_DOUBLE_EQ(std::stod(testing::sample(*parsed, "ttft_seconds", "ttft_seconds_sum", t)),
                   0.0005 + 0.001 + 0.3 + 11.0);
  EXPECT_EQ(testing::sample(*parsed, "ttft_seconds", "ttft_seconds_count", json{{"task", ""}}),
            "0.0");
}

TEST(PrometheusTest, TheReferenceCheckerCatchesBrokenText) {
  if (!testing::have_reference_parser())
    GTEST_SKIP() << "no python3 with prometheus_client (apt-get install python3-prometheus-client)";
  // The checker must be able to fail: each of these breaks one rule.
  for (const char* bad : {
           "# HELP a_total h\n# TYPE a_total counter\na_total{x=\"unterminated} 1\n",
           "a 1\n",  // no HELP/TYPE
           "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
           "h_sum 1\nh_count 1\n",  // not cumulative
           "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",  // no +Inf
           "# HELP g h\n# TYPE g gauge\ng 1\ng 2\n",  // a series twice
           "# HELP g h\n# TYPE g gauge\ng 1",         // no final newline
       }) {
    EXPECT_FALSE(testing::parse_exposition(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace loraserve::server::prometheus
