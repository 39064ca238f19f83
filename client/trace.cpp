#include "client/trace.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace loraserve::client {
namespace {

// Uniform in [0, 1) from the generator's raw 64 bits.
double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

int32_t uniform_int(std::mt19937_64& rng, int32_t lo, int32_t hi) {
  const double span = static_cast<double>(hi) - static_cast<double>(lo) + 1.0;
  return lo + static_cast<int32_t>(std::min(span - 1.0, std::floor(uniform(rng) * span)));
}

// Bounds that keep an absurd flag from exhausting the client's memory or time (a trace of 10^9
// requests died in bad_alloc, a rate of 1e-300 drew arrivals past the end of time).
constexpr int64_t kMaxRequests = 10'000'000;
constexpr int64_t kMaxPromptIds = int64_t{1} << 28;  // over the whole trace: 1 GiB of ids
constexpr double kMaxTraceSeconds = 1e7;             // the expected length: 116 days

// The checks every trace shares, for a trace of `requests` requests; `rate` is checked by the
// caller (check_rate).
Status check_lengths(const TraceOptions& o, int64_t requests) {
  if (requests > kMaxRequests)
    return invalid_argument_error("a trace of {} requests is more than the {} loractl draws",
                                  requests, kMaxRequests);
  if (o.prompt_max > 0 && requests * o.prompt_max > kMaxPromptIds)
    return invalid_argument_error(
        "--prompt-len up to {} over {} requests is more than the {} prompt ids loractl draws",
        o.prompt_max, requests, kMaxPromptIds);
  if (o.prompt_min < 1 || o.prompt_max < o.prompt_min)
    return invalid_argument_error("--prompt-len {}:{} is not a range of lengths >= 1", o.prompt_min,
                                  o.prompt_max);
  if (o.output_min < 1 || o.output_max < o.output_min)
    return invalid_argument_error("--output-len {}:{} is not a range of lengths >= 1", o.output_min,
                                  o.output_max);
  if (o.first_token_id < 0 || o.vocab_size <= o.first_token_id)
    return invalid_argument_error("vocabulary size {} leaves no prompt ids from {}", o.vocab_size,
                                  o.first_token_id);
  return ok_status();
}

// `what` (a flag or a tenant) sends `requests` at `rate` per second (0: all at once).
Status check_rate(const std::string& what, double rate, int64_t requests) {
  if (!(rate >= 0.0) || !std::isfinite(rate))
    return invalid_argument_error("{}: the rate must be >= 0 requests/s, got {}", what, rate);
  if (rate > 0.0 && static_cast<double>(requests) / rate > kMaxTraceSeconds)
    return invalid_argument_error("{}: {} requests at {} per second would take more than {} s",
                                  what, requests, rate, kMaxTraceSeconds);
  return ok_status();
}

// Draws the request's prompt and output lengths and its prompt ids.
void draw_request(const TraceOptions& o, std::mt19937_64& rng, TraceRequest* r) {
  r->prompt.resize(static_cast<size_t>(uniform_int(rng, o.prompt_min, o.prompt_max)));
  for (int32_t& id : r->prompt) id = uniform_int(rng, o.first_token_id, o.vocab_size - 1);
  r->max_tokens = uniform_int(rng, o.output_min, o.output_max);
}

// The next Poisson arrival after `t` at `rate` (t itself when the rate is 0: all at once).
double next_arrival(std::mt19937_64& rng, double t, double rate) {
  return rate > 0.0 ? t - std::log1p(-uniform(rng)) / rate : t;
}

}  // namespace

Result<std::vector<TraceRequest>> make_trace(const TraceOptions& o) {
  if (o.requests < 1) return invalid_argument_error("--requests must be >= 1, got {}", o.requests);
  LS_RETURN_IF_ERROR(check_rate("--rate", o.rate, o.requests));
  if (o.tasks.empty()) return invalid_argument_error("the trace needs at least one task");
  if (!(o.zipf >= 0.0)) return invalid_argument_error("--zipf must be >= 0, got {}", o.zipf);
  LS_RETURN_IF_ERROR(check_lengths(o, o.requests));

  std::vector<double> cumulative(o.tasks.size());
  double total = 0.0;
  for (size_t i = 0; i < o.tasks.size(); ++i) {
    total += 1.0 / std::pow(static_cast<double>(i + 1), o.zipf);
    cumulative[i] = total;
  }
  std::mt19937_64 rng(o.seed);
  std::vector<TraceRequest> trace(static_cast<size_t>(o.requests));
  double t = 0.0;
  for (TraceRequest& r : trace) {
    t = next_arrival(rng, t, o.rate);
    r.arrival_s = t;
    const double pick = uniform(rng) * total;
    const size_t task = static_cast<size_t>(
        std::upper_bound(cumulative.begin(), cumulative.end(), pick) - cumulative.begin());
    r.task_id = o.tasks[std::min(task, o.tasks.size() - 1)];
    draw_request(o, rng, &r);
  }
  return trace;
}

Result<Tenant> parse_tenant(const std::string& spec, int32_t default_requests) {
  const std::string shown = spec.substr(0, 64);
  const size_t eq = spec.find('=');
  if (eq == std::string::npos)
    return invalid_argument_error("--tenants '{}' must be TASK=RATE or TASK=RATE:REQUESTS", shown);
  Tenant t;
  t.task_id = spec.substr(0, eq);
  t.requests = default_requests;
  const std::string rest = spec.substr(eq + 1);
  const size_t colon = rest.find(':');
  try {
    size_t used = 0;
    const std::string rate = rest.substr(0, colon);
    t.rate = std::stod(rate, &used);
    if (used != rate.size()) throw std::invalid_argument("");
    if (colon != std::string::npos) {
      const std::string n = rest.substr(colon + 1);
      t.requests = std::stoi(n, &used);
      if (used != n.size()) throw std::invalid_argument("");
    }
  } catch (const std::exception&) {
    return invalid_argument_error("--tenants '{}' must be TASK=RATE or TASK=RATE:REQUESTS", shown);
  }
  if (!(t.rate >= 0.0) || !std::isfinite(t.rate))
    return invalid_argument_error("--tenants '{}': the rate must be >= 0 requests/s", shown);
  if (t.requests < 1)
    return invalid_argument_error("--tenants '{}': the tenant needs at least one request", shown);
  return t;
}

Result<std::vector<TraceRequest>> make_tenant_trace(const TraceOptions& o,
                                                    const std::vector<Tenant>& tenants) {
  if (tenants.empty()) return invalid_argument_error("--tenants names no tenant");
  int64_t requests = 0;
  for (const Tenant& tenant : tenants) {
    if (tenant.requests < 1)
      return invalid_argument_error("tenant '{}': requests must be >= 1", tenant.task_id);
    LS_RETURN_IF_ERROR(
        check_rate(fmt::format("tenant '{}'", tenant.task_id), tenant.rate, tenant.requests));
    requests += tenant.requests;
  }
  LS_RETURN_IF_ERROR(check_lengths(o, requests));
  std::mt19937_64 rng(o.seed);
  std::vector<TraceRequest> trace;
  for (const Tenant& tenant : tenants) {
    double t = 0.0;
    for (int32_t i = 0; i < tenant.requests; ++i) {
      TraceRequest r;
      t = next_arrival(rng, t, tenant.rate);
      r.arrival_s = t;
      r.task_id = tenant.task_id;
      draw_request(o, rng, &r);
      trace.push_back(std::move(r));
    }
  }
  std::stable_sort(trace.begin(), trace.end(), [](const TraceRequest& a, const TraceRequest& b) {
    return a.arrival_s < b.arrival_s;
  });
  return trace;
}

Status parse_range(const std::string& text, const std::string& name, int32_t* lo, int32_t* hi) {
  const size_t colon = text.find(':');
  try {
    size_t used = 0;
    *lo = std::stoi(text.substr(0, colon), &used);
    if (used != (colon == std::string::npos ? text.size() : colon)) throw std::invalid_argument("");
    if (colon == std::string::npos) {
      *hi = *lo;
    } else {
      const std::string rest = text.substr(colon + 1);
      *hi = std::stoi(rest, &used);
      if (used != rest.size()) throw std::invalid_argument("");
    }
  } catch (const std::exception&) {
    return invalid_argument_error("{} '{}' must be MIN:MAX (or N)", name, text);
  }
  if (*lo < 1 || *hi < *lo)
    return invalid_argument_error("{} '{}' must be MIN:MAX with 1 <= MIN <= MAX", name, text);
  return ok_status();
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const size_t index =
      static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size())));
  return values[index - 1];
}

}  // namespace loraserve::client
