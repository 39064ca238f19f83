// The shipped demo (models/demo) through a real server started with no --model, so the default
// model and its preloaded adapters are what is tested. For each task's 200 held-out inputs
// (models/demo/eval/<task>.jsonl, never seen in training): exact-match accuracy with the task's
// own adapter >= 95%; the base model alone on the same prompts <= 10%; the prompts sent to
// another task's adapter <= 10%; and the server's greedy tokens equal PyTorch's
// (torch_output_ids, written by tools/train_demo.py) on >= 99% of the own-adapter prompts.
// Every request is in flight at once, interleaved across tasks, so they run in mixed batches.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <fstream>
#include <map>
#include <thread>

#include "client/client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_suite.h"

namespace loraserve::testing {
namespace {

const std::vector<std::string> kTasks = {"reverse", "sort", "uppercase", "caesar"};
constexpr const char* kDemoModel = "models/demo";

struct EvalItem {
  std::string task;  // the task whose data set it comes from
  std::string prompt;
  std::string expected;
  std::vector<int32_t> torch_ids;
};

struct Call {
  enum Kind { kOwn, kBase, kCross };
  Call(const EvalItem* i, std::string a, Kind k) : item(i), adapter(std::move(a)), kind(k) {}
  const EvalItem* item;
  std::string adapter;  // the task ID sent: own, "" (base) or another task
  Kind kind;
  bool correct = false;
  bool agrees = false;
  std::string error;
};

std::vector<EvalItem> read_eval(const std::string& task) {
  std::vector<EvalItem> out;
  std::ifstream in(std::string(kDemoModel) + "/eval/" + task + ".jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    out.push_back({task, j.at("prompt").get<std::string>(), j.at("expected").get<std::string>(),
                   j.at("torch_output_ids").get<std::vector<int32_t>>()});
  }
  return out;
}

TEST(DemoTest, TasksDivergeAndMatchPyTorchThroughTheServer) {
  std::map<std::string, std::vector<EvalItem>> eval;
  for (const auto& t : kTasks) {
    eval[t] = read_eval(t);
    ASSERT_EQ(eval[t].size(), 200u) << "models/demo/eval/" << t << ".jsonl";
  }

  TempDir dir;
  // No --model: the server must find the shipped demo model and preload its adapters.
  auto server = ServerProcess::start({"--max-batch-size", "64", "--threads", "2"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  client::ClientOptions o = client_options(**server);
  o.timeout_s = 300;
  client::Client client(o);
  auto list = client.list_adapters();
  ASSERT_TRUE(list.ok()) << list.status().to_string();
  std::vector<std::string> served;
  for (const auto& a : list->adapters()) served.push_back(a.task_id());
  std::sort(served.begin(), served.end());
  EXPECT_EQ(served, (std::vector<std::string>{"caesar", "reverse", "sort", "uppercase"}));

  // Interleaved: item i of every task, own / base / cross, before item i + 1.
  std::vector<Call> calls;
  for (size_t i = 0; i < 200; ++i) {
    for (size_t t = 0; t < kTasks.size(); ++t) {
      const EvalItem* item = &eval[kTasks[t]][i];
      calls.emplace_back(item, kTasks[t], Call::kOwn);
      calls.emplace_back(item, "", Call::kBase);
      calls.emplace_back(item, kTasks[(t + 1 + i % 3) % kTasks.size()], Call::kCross);
    }
  }
  std::atomic<size_t> next{0};
  {
    std::vector<std::jthread> clients;
    for (int c = 0; c < 96; ++c) {
      clients.emplace_back([&] {
        for (size_t k = next++; k < calls.size(); k = next++) {
          Call& call = calls[k];
          v1::GenerateRequest r;
          r.set_task_id(call.adapter);
          r.set_text(call.item->prompt);
          r.mutable_params()->set_temperature(0.0f);
          r.mutable_params()->set_max_tokens(16);
          auto out = client.generate(r);
          if (!out.ok()) {
            call.error = out.status().to_string();
            continue;
          }
          call.correct =
              out->finish_reason() == v1::FINISH_REASON_EOS && out->text() == call.item->expected;
          call.agrees = std::vector<int32_t>(out->token_ids().begin(), out->token_ids().end()) ==
                        call.item->torch_ids;
        }
      });
    }
  }

  std::map<std::string, std::array<int, 3>> correct;  // task -> own, base, cross
  int agree = 0, own = 0;
  for (const Call& call : calls) {
    ASSERT_TRUE(call.error.empty()) << call.adapter << ": " << call.error;
    correct[call.item->task][call.kind] += call.correct ? 1 : 0;
    if (call.kind == Call::kOwn) {
      ++own;
      agree += call.agrees ? 1 : 0;
    }
  }
  for (const auto& t : kTasks) {
    const auto& c = correct[t];
    std::printf("%-10s own adapter %5.1f%%   base model %5.1f%%   other adapters %5.1f%%\n",
                t.c_str(), c[0] / 2.0, c[1] / 2.0, c[2] / 2.0);
    EXPECT_GE(c[Call::kOwn], 190) << t << ": accuracy with its own adapter below 95%";
    EXPECT_LE(c[Call::kBase], 20) << t << ": the base model alone is right above 10%";
    EXPECT_LE(c[Call::kCross], 20) << t << ": other tasks' adapters are right above 10%";
  }
  std::printf("server and PyTorch greedy tokens agree on %d of %d prompts\n", agree, own);
  EXPECT_GE(agree * 100, own * 99) << "server vs PyTorch agreement below 99%";

  // Every request ran; the stats agree.
  auto stats = client.stats();
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  uint64_t finished = 0;
  for (const auto& t : stats->tasks()) finished += t.requests();
  EXPECT_GE(finished, calls.size());
  (*server)->signal(SIGTERM);
  EXPECT_EQ((*server)->wait(60), 0) << log_tail(**server);
}

}  // namespace
}  // namespace loraserve::testing
