#include "server/prometheus.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>

namespace loraserve::server::prometheus {
namespace {

bool valid_metric_name(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool valid_label_name(std::string_view s) {
  if (s.empty() || s.starts_with("__")) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string_view type_name(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// `{a="x",b="y"}` (with `extra` appended as one more pair), or nothing without labels.
void write_labels(const std::vector<std::string>& names, const std::vector<std::string>& values,
                  std::string_view extra_name, std::string_view extra_value, std::string* out) {
  if (names.empty() && extra_name.empty()) return;
  out->push_back('{');
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out->push_back(',');
    out->append(names[i]);
    out->push_back('=');
    out->append(escape_label_value(values[i]));
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out->push_back(',');
    out->append(extra_name);
    out->push_back('=');
    out->append(escape_label_value(extra_value));
  }
  out->push_back('}');
}

void write_sample(std::string_view name, const std::vector<std::string>& label_names,
                  const std::vector<std::string>& values, std::string_view extra_name,
                  std::string_view extra_value, std::string_view value, std::string* out) {
  out->append(name);
  write_labels(label_names, values, extra_name, extra_value, out);
  out->push_back(' ');
  out->append(value);
  out->push_back('\n');
}

}  // namespace

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

std::string escape_label_value(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds), buckets_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i <= bounds.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
  // The first bucket whose bound is >= v (`le` is inclusive); NaN lands in +Inf.
  const size_t i =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

template <typename Metric>
Metric& Family<Metric>::with_locked(std::vector<std::string> values) {
  assert(values.size() == label_names_.size() && "one value per label name");
  auto it = series_.find(values);
  if (it != series_.end()) return *it->second;
  std::unique_ptr<Metric> m;
  if constexpr (std::is_same_v<Metric, Histogram>) {
    m = std::make_unique<Histogram>(bounds_);
  } else {
    m = std::make_unique<Metric>();
  }
  Metric& ref = *m;
  series_.emplace(std::move(values), std::move(m));
  return ref;
}

template <typename Metric>
Metric& Family<Metric>::with(std::vector<std::string> values) {
  std::lock_guard<std::mutex> lock(mu_);
  return with_locked(std::move(values));
}

template <typename Metric>
void Family<Metric>::remove(const std::vector<std::string>& values) {
  std::lock_guard<std::mutex> lock(mu_);
  series_.erase(values);
}

template <typename Metric>
void Family<Metric>::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  series_.clear();
}

template <typename Metric>
void Family<Metric>::replace_all(std::vector<std::string> values,
                                 double v) requires std::is_same_v<Metric, Gauge> {
  std::lock_guard<std::mutex> lock(mu_);
  series_.clear();
  // clang 14 instantiates constrained members in the explicit instantiations below (C++20 says
  // it must not), so the body is kept valid for every Metric.
  if constexpr (std::is_same_v<Metric, Gauge>) with_locked(std::move(values)).set(v);
}

template <typename Metric>
std::vector<std::vector<std::string>> Family<Metric>::series() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::vector<std::string>> out;
  out.reserve(series_.size());
  for (const auto& [values, m] : series_) out.push_back(values);
  return out;
}

template <typename Metric>
void Family<Metric>::write(std::string* out) const {
  out->append("# HELP ").append(name_).append(" ").append(escape_help(help_)).append("\n");
  out->append("# TYPE ").append(name_).append(" ").append(type_name(type_)).append("\n");
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [values, m] : series_) {
    if constexpr (std::is_same_v<Metric, Counter>) {
      write_sample(name_, label_names_, values, "", "", std::to_string(m->value()), out);
    } else if constexpr (std::is_same_v<Metric, Gauge>) {
      write_sample(name_, label_names_, values, "", "", format_value(m->value()), out);
    } else {
      const Histogram::Snapshot s = m->snapshot();
      const std::string bucket = name_ + "_bucket";
      for (size_t i = 0; i < bounds_.size(); ++i) {
        write_sample(bucket, label_names_, values, "le", format_value(bounds_[i]),
                     std::to_string(s.cumulative[i]), out);
      }
      write_sample(bucket, label_names_, values, "le", "+Inf", std::to_string(s.count()), out);
      write_sample(name_ + "_sum", label_names_, values, "", "", format_value(s.sum), out);
      write_sample(name_ + "_count", label_names_, values, "", "", std::to_string(s.count()), out);
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

Status Registry::check_new(const std::string& name, const std::vector<std::string>& labels) const {
  if (!valid_metric_name(name))
    return invalid_argument_error("metric name '{}' is not [a-zA-Z_:][a-zA-Z0-9_:]*", name);
  for (const auto& l : labels) {
    if (!valid_label_name(l)) {
      return invalid_argument_error(
          "metric {}: label name '{}' is not [a-zA-Z_][a-zA-Z0-9_]* or starts with __", name, l);
    }
    if (std::count(labels.begin(), labels.end(), l) > 1)
      return invalid_argument_error("metric {}: label '{}' appears twice", name, l);
  }
  for (const auto& f : families_) {
    if (f->name() == name) return already_exists_error("metric {} is already registered", name);
  }
  return ok_status();
}

Result<CounterFamily*> Registry::counter(std::string name, std::string help,
                                         std::vector<std::string> labels) {
  std::lock_guard<std::mutex> lock(mu_);
  LS_RETURN_IF_ERROR(check_new(name, labels));
  if (!name.ends_with("_total"))
    return invalid_argument_error("counter {} must end in _total", name);
  auto f = std::make_unique<CounterFamily>(std::move(name), std::move(help), MetricType::kCounter,
                                           std::move(labels));
  CounterFamily* p = f.get();
  families_.push_back(std::move(f));
  return p;
}

Result<GaugeFamily*> Registry::gauge(std::string name, std::string help,
                                     std::vector<std::string> labels) {
  std::lock_guard<std::mutex> lock(mu_);
  LS_RETURN_IF_ERROR(check_new(name, labels));
  auto f = std::make_unique<GaugeFamily>(std::move(name), std::move(help), MetricType::kGauge,
                                         std::move(labels));
  GaugeFamily* p = f.get();
  families_.push_back(std::move(f));
  return p;
}

Result<HistogramFamily*> Registry::histogram(std::string name, std::string help,
                                             std::vector<std::string> labels,
                                             std::vector<double> bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  LS_RETURN_IF_ERROR(check_new(name, labels));
  if (std::find(labels.begin(), labels.end(), "le") != labels.end())
    return invalid_argument_error("histogram {} may not have a label named le", name);
  if (bounds.empty()) return invalid_argument_error("histogram {} needs bucket bounds", name);
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
      return invalid_argument_error(
          "histogram {}: bucket bounds must be finite and strictly increasing", name);
    }
  }
  auto f =
      std::make_unique<HistogramFamily>(std::move(name), std::move(help), MetricType::kHistogram,
                                        std::move(labels), std::move(bounds));
  HistogramFamily* p = f.get();
  families_.push_back(std::move(f));
  return p;
}

std::string Registry::render() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& f : families_) f->write(&out);
  return out;
}

}  // namespace loraserve::server::prometheus
