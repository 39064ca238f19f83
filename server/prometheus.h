// Prometheus metrics of our own: counters, gauges and histograms, each a family of series told
// apart by label values, and their text exposition (format 0.0.4). Why not a library: Debian's
// prometheus-cpp-dev pulls civetweb, libcurl and zlib development packages for its pull and
// push parts (we serve /metrics on our own HTTP listener), its runtime library would join every
// image, and the format is small enough to verify against an independent parser (the tests use
// python3-prometheus-client's).
//
// Recording is lock-free: a series is a few relaxed atomics, updated in place. Looking a series
// up by its label values takes its family's lock, so hot paths look up once and keep the
// reference (a series lives as long as its family unless remove() or clear() drops it).
// Families are created at start-up and live as long as their Registry. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/status.h"

namespace loraserve::server::prometheus {

// A monotonically increasing count (its name ends in `_total`).
class Counter {
 public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  // For a count kept elsewhere and copied in at scrape time. REQUIRES: `total` never decreases.
  void set(uint64_t total) { value_.store(total, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into buckets by upper bound (`le`), with their sum. Each bucket holds its
// own count; the exposition makes them cumulative, and `_count` is the `+Inf` bucket, so the two
// always agree even while observations land.
class Histogram {
 public:
  // REQUIRES: `bounds` (shared by the family) is sorted, finite and has no duplicates.
  explicit Histogram(std::span<const double> bounds);
  void observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0.0;
    uint64_t count() const { return cumulative.back(); }
  };
  Snapshot snapshot() const;
  std::span<const double> bounds() const { return bounds_; }

 private:
  std::span<const double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

// What every family does for the exposition.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names)
      : name_(std::move(name)),
        help_(std::move(help)),
        type_(type),
        label_names_(std::move(label_names)) {}
  virtual ~FamilyBase() = default;

  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Appends `# HELP`, `# TYPE` and every series, sorted by label values.
  virtual void write(std::string* out) const = 0;

 protected:
  std::string name_;
  std::string help_;
  MetricType type_;
  std::vector<std::string> label_names_;
};

// The series of one metric, by label values (in the order of the family's label names).
template <typename Metric>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> labels,
         std::vector<double> bounds = {})
      : FamilyBase(std::move(name), std::move(help), type, std::move(labels)),
        bounds_(std::move(bounds)) {}

  // The series with these label values, created (at zero) on first use. The reference stays
  // valid until remove() or clear() drops the series.
  // REQUIRES: one value per label name.
  Metric& with(std::vector<std::string> values);
  Metric& with(std::initializer_list<std::string_view> values) {
    return with(std::vector<std::string>(values.begin(), values.end()));
  }
  // The series of a family without labels.
  Metric& get() { return with(std::vector<std::string>{}); }
  void remove(const std::vector<std::string>& values);
  void clear();
  // Drops every series and sets the one with `values` to `v`, atomically for the exposition
  // (an info gauge whose labels change).
  void replace_all(std::vector<std::string> values,
                   double v) requires std::is_same_v<Metric, Gauge>;
  // The label values of every series, sorted.
  std::vector<std::vector<std::string>> series() const;

  void write(std::string* out) const override;

 private:
  Metric& with_locked(std::vector<std::string> values);

  std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> series_;
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// The families of one process, in registration order. Thread-safe: families are registered at
// start-up and rendered from any thread.
class Registry {
 public:
  // Errors: INVALID_ARGUMENT (a name that is not [a-zA-Z_:][a-zA-Z0-9_:]*, a counter not ending
  // in `_total`, a label name that is not [a-zA-Z_][a-zA-Z0-9_]* or starts with `__`, `le` on a
  // histogram, bounds not sorted, finite and distinct), ALREADY_EXISTS (the name is taken).
  Result<CounterFamily*> counter(std::string name, std::string help,
                                 std::vector<std::string> labels = {});
  Result<GaugeFamily*> gauge(std::string name, std::string help,
                             std::vector<std::string> labels = {});
  Result<HistogramFamily*> histogram(std::string name, std::string help,
                                     std::vector<std::string> labels, std::vector<double> bounds);

  // The text exposition of every family (Content-Type: kContentType).
  std::string render() const;

 private:
  Status check_new(const std::string& name, const std::vector<std::string>& labels) const;

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_;
};

inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// `v` as the exposition writes a sample value: integers without a fraction, `+Inf`, `-Inf`,
// `NaN`, otherwise the shortest text that reads back as the same double.
std::string format_value(double v);
// A label value between double quotes: `\` `"` and newline escaped.
std::string escape_label_value(std::string_view v);
// A HELP text: `\` and newline escaped.
std::string escape_help(std::string_view v);

}  // namespace loraserve::server::prometheus
