#include "client/trace.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace loraserve::client {
namespace {

TraceOptions options() {
  TraceOptions o;
  o.requests = 4000;
  o.rate = 50.0;
  o.tasks = {"a", "b", "c", "d"};
  o.zipf = 1.0;
  o.prompt_min = 8;
  o.prompt_max = 24;
  o.output_min = 4;
  o.output_max = 6;
  o.vocab_size = 100;
  o.first_token_id = 3;
  o.seed = 11;
  return o;
}

TEST(MakeTrace, SameSeedSameTraceOtherSeedOtherTrace) {
  auto a = make_trace(options());
  auto b = make_trace(options());
  TraceOptions other = options();
  other.seed = 12;
  auto c = make_trace(other);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_EQ(a->size(), b->size());
  bool differs = false;
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].arrival_s, (*b)[i].arrival_s);
    EXPECT_EQ((*a)[i].task_id, (*b)[i].task_id);
    EXPECT_EQ((*a)[i].prompt, (*b)[i].prompt);
    EXPECT_EQ((*a)[i].max_tokens, (*b)[i].max_tokens);
    differs = differs || (*a)[i].prompt != (*c)[i].prompt;
  }
  EXPECT_TRUE(differs);
}

TEST(MakeTrace, LengthsAndIdsStayInTheirRanges) {
  auto t = make_trace(options());
  ASSERT_TRUE(t.ok());
  std::map<size_t, int> prompt_lengths;
  for (const auto& r : *t) {
    ASSERT_GE(r.prompt.size(), 8u);
    ASSERT_LE(r.prompt.size(), 24u);
    ASSERT_GE(r.max_tokens, 4);
    ASSERT_LE(r.max_tokens, 6);
    for (int32_t id : r.prompt) {
      ASSERT_GE(id, 3);
      ASSERT_LT(id, 100);
    }
    ++prompt_lengths[r.prompt.size()];
  }
  EXPECT_EQ(prompt_lengths.size(), 17u);  // every length in 8..24 occurs
}

TEST(MakeTrace, ArrivalsArePoissonAtTheRate) {
  auto t = make_trace(options());
  ASSERT_TRUE(t.ok());
  const double span = t->back().arrival_s;
  // 4000 arrivals at 50/s: the mean gap is 1/50 s; its standard error is 1/50/sqrt(4000).
  EXPECT_NEAR(span / 4000.0, 0.02, 0.02 * 4 / std::sqrt(4000.0));
  double sq = 0.0;
  for (size_t i = 1; i < t->size(); ++i) {
    const double gap = (*t)[i].arrival_s - (*t)[i - 1].arrival_s;
    ASSERT_GE(gap, 0.0);
    sq += (gap - 0.02) * (gap - 0.02);
  }
  // Exponential gaps: standard deviation equal to the mean.
  EXPECT_NEAR(std::sqrt(sq / 3999.0), 0.02, 0.002);
  TraceOptions saturated = options();
  saturated.rate = 0.0;
  auto s = make_trace(saturated);
  ASSERT_TRUE(s.ok());
  for (const auto& r : *s) EXPECT_EQ(r.arrival_s, 0.0);
}

TEST(MakeTrace, TasksFollowZipf) {
  auto t = make_trace(options());
  ASSERT_TRUE(t.ok());
  std::map<std::string, int> counts;
  for (const auto& r : *t) ++counts[r.task_id];
  // Weights 1, 1/2, 1/3, 1/4 of 25/12.
  const double total = 1.0 + 0.5 + 1.0 / 3 + 0.25;
  const std::vector<std::pair<std::string, double>> expected = {
      {"a", 1.0 / total}, {"b", 0.5 / total}, {"c", 1.0 / 3 / total}, {"d", 0.25 / total}};
  for (const auto& [task, p] : expected) {
    const double sd = std::sqrt(p * (1 - p) / 4000.0);
    EXPECT_NEAR(counts[task] / 4000.0, p, 4 * sd) << task;
  }
}

TEST(MakeTrace, BadOptionsNameTheOption) {
  TraceOptions o = options();
  o.prompt_max = 2;
  EXPECT_NE(make_trace(o).status().message().find("--prompt-len"), std::string::npos);
  o = options();
  o.tasks.clear();
  EXPECT_EQ(make_trace(o).status().code(), StatusCode::kInvalidArgument);
  o = options();
  o.vocab_size = 3;
  EXPECT_NE(make_trace(o).status().message().find("vocabulary"), std::string::npos);
  o = options();
  o.rate = -1;
  EXPECT_NE(make_trace(o).status().message().find("--rate"), std::string::npos);
}

// Absurd sizes are refused before anything is drawn: 10^9 requests died in bad_alloc, and a
// rate of 1e-300 drew arrivals past the end of time.
TEST(MakeTrace, AbsurdSizesAreRefused) {
  TraceOptions o = options();
  o.requests = 1'000'000'000;
  EXPECT_NE(make_trace(o).status().message().find("requests"), std::string::npos);
  o = options();
  o.prompt_max = 2'000'000'000;
  EXPECT_NE(make_trace(o).status().message().find("--prompt-len"), std::string::npos);
  o = options();
  o.rate = 1e-300;
  EXPECT_NE(make_trace(o).status().message().find("--rate"), std::string::npos);
  o.rate = 1e-3;  // days, but within the bound
  EXPECT_TRUE(make_trace(o).ok());
  EXPECT_NE(make_tenant_trace(options(), {{"a", 1e-9, 5}}).status().message().find("tenant 'a'"),
            std::string::npos);
  EXPECT_NE(make_tenant_trace(options(), {{"a", 1.0, 6'000'000}, {"b", 1.0, 6'000'000}})
                .status()
                .message()
                .find("requests"),
            std::string::npos);
}

TEST(ParseRange, AcceptsRangesAndSingleValues) {
  int32_t lo = 0, hi = 0;
  ASSERT_TRUE(parse_range("16:64", "--x", &lo, &hi).ok());
  EXPECT_EQ(lo, 16);
  EXPECT_EQ(hi, 64);
  ASSERT_TRUE(parse_range("7", "--x", &lo, &hi).ok());
  EXPECT_EQ(lo, 7);
  EXPECT_EQ(hi, 7);
  EXPECT_FALSE(parse_range("9:3", "--x", &lo, &hi).ok());
  EXPECT_FALSE(parse_range("0:3", "--x", &lo, &hi).ok());
  EXPECT_FALSE(parse_range("a:3", "--x", &lo, &hi).ok());
  EXPECT_FALSE(parse_range("3:4x", "--x", &lo, &hi).ok());
  EXPECT_NE(parse_range("", "--output-len", &lo, &hi).message().find("--output-len"),
            std::string::npos);
}

TEST(ParseTenant, TaskRateAndRequests) {
  auto t = parse_tenant("reverse=2.5:10", 99);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->task_id, "reverse");
  EXPECT_EQ(t->rate, 2.5);
  EXPECT_EQ(t->requests, 10);
  t = parse_tenant("a:b=0", 99);  // task IDs may hold ':'; the rate starts after '='
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->task_id, "a:b");
  EXPECT_EQ(t->rate, 0.0);
  EXPECT_EQ(t->requests, 99);
  t = parse_tenant("=1", 5);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->task_id, "");  // the base model
  for (const char* bad :
       {"reverse", "a=", "a=x", "a=1:", "a=1:0", "a=-1", "a=inf", "a=1:2:3", "a=1e999", "a=2x"}) {
    const Status st = parse_tenant(bad, 5).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("--tenants"), std::string::npos) << bad;
  }
}

TEST(MakeTenantTrace, EachTenantAtItsOwnRateMergedInTimeOrder) {
  TraceOptions o = options();
  const std::vector<Tenant> tenants = {{"flood", 0.0, 300}, {"steady", 20.0, 2000}, {"", 5.0, 500}};
  auto trace = make_tenant_trace(o, tenants);
  ASSERT_TRUE(trace.ok()) << trace.status().to_string();
  ASSERT_EQ(trace->size(), 2800u);
  std::map<std::string, int> count;
  std::map<std::string, double> last;
  for (size_t i = 0; i < trace->size(); ++i) {
    const TraceRequest& r = (*trace)[i];
    if (i > 0) {
      EXPECT_GE(r.arrival_s, (*trace)[i - 1].arrival_s);
    }
    ++count[r.task_id];
    last[r.task_id] = r.arrival_s;
    EXPECT_GE(static_cast<int32_t>(r.prompt.size()), o.prompt_min);
    EXPECT_LE(static_cast<int32_t>(r.prompt.size()), o.prompt_max);
    EXPECT_GE(r.max_tokens, o.output_min);
    EXPECT_LE(r.max_tokens, o.output_max);
  }
  EXPECT_EQ(count["flood"], 300);
  EXPECT_EQ(count["steady"], 2000);
  EXPECT_EQ(count[""], 500);
  // Rate 0: all at once; otherwise n requests at rate λ span about n / λ seconds (within 10%:
  // the sum of n exponential gaps has a standard deviation of sqrt(n) / λ).
  EXPECT_EQ(last["flood"], 0.0);
  EXPECT_NEAR(last["steady"], 100.0, 10.0);
  EXPECT_NEAR(last[""], 100.0, 10.0);
  // The same seed gives the same trace.
  auto again = make_tenant_trace(o, tenants);
  ASSERT_TRUE(again.ok());
  for (size_t i = 0; i < trace->size(); ++i) {
    EXPECT_EQ((*trace)[i].arrival_s, (*again)[i].arrival_s);
    EXPECT_EQ((*trace)[i].prompt, (*again)[i].prompt);
  }
}

TEST(MakeTenantTrace, RefusesNoTenantsAndBadTenants) {
  EXPECT_EQ(make_tenant_trace(options(), {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(make_tenant_trace(options(), {{"a", -1.0, 3}}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(make_tenant_trace(options(), {{"a", 1.0, 0}}).status().code(),
            StatusCode::kInvalidArgument);
  TraceOptions o = options();
  o.output_min = 0;
  EXPECT_NE(make_tenant_trace(o, {{"a", 1.0, 3}}).status().message().find("--output-len"),
            std::string::npos);
}

TEST(Percentile, NearestRank) {
  const std::vector<double> v = {5, 1, 4, 2, 3, 6, 7, 8, 9, 10};
  EXPECT_EQ(percentile(v, 50), 5);
  EXPECT_EQ(percentile(v, 90), 9);
  EXPECT_EQ(percentile(v, 99), 10);
  EXPECT_EQ(percentile(v, 0), 1);
  EXPECT_EQ(percentile({}, 50), 0);
}

}  // namespace
}  // namespace loraserve::client
