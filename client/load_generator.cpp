#include "client/load_generator.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>

namespace loraserve::client {
namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// One GenerateStream call; deletes itself when done.
class StreamCall final : public grpc::ClientReadReactor<v1::GenerateStreamResponse> {
 public:
  StreamCall(LoadTracker* tracker, RequestRecord* record, const ClientOptions& options)
      : tracker_(tracker), record_(record) {
    if (options.timeout_s > 0) {
      context_.set_deadline(std::chrono::system_clock::now() +
                            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                std::chrono::duration<double>(options.timeout_s)));
    }
  }

  void start(v1::Inference::Stub& stub, const TraceRequest& r) {
    v1::GenerateRequest* g = request_.mutable_request();
    g->set_task_id(r.task_id);
    g->mutable_token_ids()->mutable_ids()->Add(r.prompt.begin(), r.prompt.end());
    g->mutable_params()->set_max_tokens(r.max_tokens);
    g->mutable_params()->set_temperature(0.0f);
    g->mutable_params()->set_ignore_eos(true);
    record_->sent = Clock::now();
    stub.async()->GenerateStream(&context_, &request_, this);
    StartRead(&message_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    const auto now = Clock::now();
    const auto n = static_cast<uint32_t>(message_.token_ids_size());
    if (n > 0) {
      if (record_->tokens == 0) record_->first_token = now;
      record_->last_token = now;
      record_->tokens += n;
      tracker_->add_tokens(n);
    }
    if (message_.has_usage()) record_->prompt_tokens = message_.usage().prompt_tokens();
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    record_->status = from_grpc(status);
    tracker_->finish_one();
    delete this;
  }

 private:
  LoadTracker* tracker_;
  RequestRecord* record_;
  grpc::ClientContext context_;
  v1::GenerateStreamRequest request_;
  v1::GenerateStreamResponse message_;
};

}  // namespace

void LoadTracker::add_tokens(uint32_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  tokens_ += n;
}

void LoadTracker::finish_one() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++finished_;
  }
  cv_.notify_all();
}

void LoadTracker::wait(std::chrono::milliseconds wait, int32_t* finished, uint64_t* tokens) {
  std::unique_lock<std::mutex> lock(mu_);
  const int32_t before = finished_;
  cv_.wait_for(lock, wait, [&] { return finished_ != before; });
  *finished = finished_;
  *tokens = tokens_;
}

LoadResult drive_trace(const std::vector<TraceRequest>& trace, std::vector<RequestRecord>& records,
                       LoadTracker& tracker, const std::function<void(size_t)>& send,
                       const std::function<void(const LoadProgress&)>& progress) {
  const int32_t total = static_cast<int32_t>(trace.size());
  const auto start = Clock::now();
  auto report = [&](int32_t sent) {
    LoadProgress p;
    p.sent = sent;
    p.total = total;
    p.elapsed_s = seconds(Clock::now() - start);
    tracker.wait(std::chrono::milliseconds(0), &p.finished, &p.tokens);
    progress(p);
  };
  auto last_report = start;
  for (size_t i = 0; i < trace.size(); ++i) {
    const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(trace[i].arrival_s));
    while (Clock::now() < due) {
      std::this_thread::sleep_until(std::min(due, last_report + std::chrono::milliseconds(200)));
      if (Clock::now() - last_report >= std::chrono::milliseconds(200)) {
        report(static_cast<int32_t>(i));
        last_report = Clock::now();
      }
    }
    send(i);
  }
  for (;;) {
    int32_t finished = 0;
    uint64_t tokens = 0;
    tracker.wait(std::chrono::milliseconds(200), &finished, &tokens);
    report(total);
    if (finished >= total) break;
  }

  LoadResult out;
  out.requests = total;
  Clock::time_point first_sent = records.empty() ? start : records[0].sent;
  Clock::time_point last_done = first_sent;
  std::vector<double> ttft, tpot;
  for (const RequestRecord& r : records) {
    first_sent = std::min(first_sent, r.sent);
    if (!r.status.ok()) {
      ++out.errors[r.status.to_string()];
      continue;
    }
    ++out.succeeded;
    out.prompt_tokens += r.prompt_tokens;
    out.completion_tokens += r.tokens;
    if (r.tokens == 0) continue;
    last_done = std::max(last_done, r.last_token);
    ttft.push_back(seconds(r.first_token - r.sent) * 1e3);
    if (r.tokens > 1)
      tpot.push_back(seconds(r.last_token - r.first_token) * 1e3 /
                     static_cast<double>(r.tokens - 1));
  }
  out.duration_s = seconds(last_done - first_sent);
  if (out.duration_s > 0) {
    out.requests_per_s = static_cast<double>(out.succeeded) / out.duration_s;
    out.tokens_per_s = static_cast<double>(out.completion_tokens) / out.duration_s;
  }
  out.ttft_ms = {percentile(ttft, 50), percentile(ttft, 90), percentile(ttft, 99)};
  out.tpot_ms = {percentile(tpot, 50), percentile(tpot, 90), percentile(tpot, 99)};
  return out;
}

LoadResult run_load(const Client& client, const std::vector<TraceRequest>& trace,
                    const std::function<void(const LoadProgress&)>& progress) {
  LoadTracker tracker;
  std::vector<RequestRecord> records(trace.size());
  return drive_trace(
      trace, records, tracker,
      [&](size_t i) {
        (new StreamCall(&tracker, &records[i], client.options()))
            ->start(client.inference(), trace[i]);
      },
      progress);
}

}  // namespace loraserve::client
