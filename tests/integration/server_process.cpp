#include "tests/integration/server_process.h"

#include <fcntl.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "tokenizer/utf8.h"

extern char** environ;

namespace loraserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Spawns argv with stdout to `out_path` and stderr appended to `log_path` (or both to one file).
// fork and exec rather than posix_spawn, for PR_SET_PDEATHSIG: a test process that dies (an
// assertion that aborts, a crash, ctest's SIGKILL at its timeout) takes its server with it
// instead of leaving it running for the rest of the CI run. Everything the child uses is made
// before fork: the child of a threaded process may only make async-signal-safe calls.
Result<pid_t> spawn(const std::vector<std::string>& argv, const fs::path& out_path,
                    const fs::path& log_path) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const bool one_file = out_path == log_path;
  const char* out = out_path.c_str();
  const char* log = log_path.c_str();
  // exec's errno comes back through a close-on-exec pipe: nothing to read means exec worked.
  int failure[2];
  if (::pipe2(failure, O_CLOEXEC) != 0)
    return internal_error("cannot start {}: pipe: {}", argv[0], strerror(errno));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(failure[0]);
    ::close(failure[1]);
    return internal_error("cannot start {}: fork: {}", argv[0], strerror(e));
  }
  if (pid == 0) {
    // SIGKILL when the thread that forked ends; the test may already have died before this ran.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);
    const int in_fd = ::open("/dev/null", O_RDONLY);
    const int out_fd = ::open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err_fd = one_file ? out_fd : ::open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in_fd >= 0 && out_fd >= 0 && err_fd >= 0 && ::dup2(in_fd, STDIN_FILENO) >= 0 &&
        ::dup2(out_fd, STDOUT_FILENO) >= 0 && ::dup2(err_fd, STDERR_FILENO) >= 0) {
      // Only 0, 1 and 2 go to the server, as posix_spawn's file actions left it.
      for (const int fd : {in_fd, out_fd, one_file ? -1 : err_fd}) {
        if (fd > STDERR_FILENO) ::close(fd);
      }
      ::execve(args[0], args.data(), environ);
    }
    const int e = errno;
    (void)!::write(failure[1], &e, sizeof e);
    ::_exit(127);
  }
  ::close(failure[1]);
  int e = 0;
  ssize_t got;
  do {
    got = ::read(failure[0], &e, sizeof e);
  } while (got < 0 && errno == EINTR);
  ::close(failure[0]);
  if (got == static_cast<ssize_t>(sizeof e)) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return internal_error("cannot start {}: {}", argv[0], strerror(e));
  }
  return pid;
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::string loraserve_binary() { return LORASERVE_BINARY; }
std::string loractl_binary() { return LORACTL_BINARY; }

Result<std::unique_ptr<ServerProcess>> ServerProcess::start(const std::vector<std::string>& args,
                                                            const fs::path& work_dir,
                                                            double timeout_s) {
  auto p = std::unique_ptr<ServerProcess>(new ServerProcess());
  static int counter = 0;
  const std::string stem = "server" + std::to_string(++counter);
  const fs::path ready = work_dir / (stem + ".ready");
  p->log_path_ = work_dir / (stem + ".log");
  std::vector<std::string> argv = {loraserve_binary(), "serve"};
  argv.insert(argv.end(), args.begin(), args.end());
  // One compute thread: tests run side by side on few cores, where OpenMP's spinning workers
  // would compete with gRPC's threads.
  if (std::find(args.begin(), args.end(), "--threads") == args.end()) {
    argv.push_back("--threads");
    argv.push_back("1");
  }
  // Never the default port: tests run side by side.
  if (std::find(args.begin(), args.end(), "--http-listen") == args.end()) {
    argv.push_back("--http-listen");
    argv.push_back("127.0.0.1:0");
  }
  for (const std::string& a :
       {std::string("--listen"), std::string("127.0.0.1:0"), std::string("--admin-listen"),
        std::string("127.0.0.1:0"), std::string("--ready-file"), ready.string()}) {
    argv.push_back(a);
  }
  LS_ASSIGN_OR_RETURN(p->pid_, spawn(argv, p->log_path_, p->log_path_));
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s));
  while (Clock::now() < deadline) {
    int status = 0;
    if (waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
      p->exited_ = true;
      return internal_error("the server exited with {} before serving; its log:\n{}",
                            exit_code(status), p->log());
    }
    if (fs::exists(ready)) {
      const auto j = nlohmann::json::parse(read_file(ready), nullptr, false);
      if (!j.is_discarded()) {
        p->address_ = j.at("listen").get<std::string>();
        p->admin_address_ = j.at("admin_listen").get<std::string>();
        p->http_address_ = j.value("http_listen", "");
        p->http_admin_address_ = j.value("http_admin_listen", "");
        return p;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return internal_error("the server did not serve within {} s; its log:\n{}", timeout_s, p->log());
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !exited_) {
    // A clean stop first, so that the server's exit path runs (and, in sanitizer builds, its leak
    // check: tools/sanitize-test collects the reports).
    kill(pid_, SIGTERM);
    if (wait(20) >= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
}

void ServerProcess::signal(int sig) const { kill(pid_, sig); }

int ServerProcess::wait(double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s));
  while (Clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      return exit_code(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

std::string ServerProcess::log() const { return read_file(log_path_); }

std::string ServerProcess::log_with(const std::string& needle, double timeout_s) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    std::string text = log();
    if (text.find(needle) != std::string::npos || std::chrono::steady_clock::now() > deadline)
      return text;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string log_tail(const ServerProcess& server, size_t bytes) {
  const std::string log = server.log();
  return log.size() <= bytes ? log : log.substr(log.size() - bytes);
}

int run_command(const std::vector<std::string>& argv, std::string* out, const fs::path& log,
                double timeout_s) {
  const fs::path out_path = log.string() + ".stdout";
  auto pid = spawn(argv, out_path, log);
  if (!pid.ok()) return -1;
  int status = 0;
  if (timeout_s <= 0) {
    waitpid(*pid, &status, 0);
  } else {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(timeout_s));
    while (waitpid(*pid, &status, WNOHANG) != *pid) {
      if (Clock::now() >= deadline) {
        kill(*pid, SIGKILL);
        waitpid(*pid, &status, 0);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (out != nullptr) *out = read_file(out_path);
  return exit_code(status);
}

TempDir::TempDir() {
  std::string templ = (fs::temp_directory_path() / "loraserve_test_XXXXXX").string();
  if (mkdtemp(templ.data()) == nullptr) std::abort();
  path_ = fs::canonical(templ);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void copy_adapter(const fs::path& src, const fs::path& dst, double alpha_factor) {
  fs::create_directories(dst);
  fs::copy_file(src / "adapter_model.safetensors", dst / "adapter_model.safetensors",
                fs::copy_options::overwrite_existing);
  nlohmann::json config = nlohmann::json::parse(read_file(src / "adapter_config.json"));
  config["lora_alpha"] = config["lora_alpha"].get<double>() * alpha_factor;
  for (auto& [name, alpha] : config["alpha_pattern"].items())
    alpha = alpha.get<double>() * alpha_factor;
  std::ofstream(dst / "adapter_config.json") << config.dump(2);
}

std::vector<std::string> make_adapter_root(const fs::path& root, int n) {
  const fs::path fixtures = fs::path(kFixtureModel) / "adapters";
  const std::vector<std::string> sources = {"all7_r8", "attn_r16_rslora", "mlp_r4_layer1",
                                            "regex_patterns"};
  const double factors[] = {1.0, 2.0, 0.5, 3.0, 1.5, 0.25};
  std::vector<std::string> tasks;
  for (int i = 0; i < n; ++i) {
    const std::string task = fmt::format("t{}", i);
    copy_adapter(fixtures / sources[static_cast<size_t>(i) % sources.size()], root / task,
                 factors[(static_cast<size_t>(i) / sources.size()) % 6]);
    tasks.push_back(task);
  }
  return tasks;
}

fs::path make_model_with_tokenizer(const fs::path& dir) {
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(kFixtureModel)) {
    if (entry.is_regular_file())
      fs::copy_file(entry.path(), dir / entry.path().filename(),
                    fs::copy_options::overwrite_existing);
  }
  nlohmann::json vocab = nlohmann::json::object();
  const auto& alphabet = tokenizer::ByteLevelAlphabet::get();
  for (int b = 0; b < 256; ++b) vocab[std::string(alphabet.encode(static_cast<uint8_t>(b)))] = b;
  const nlohmann::json byte_level = {{"type", "ByteLevel"},
                                     {"add_prefix_space", false},
                                     {"trim_offsets", false},
                                     {"use_regex", true}};
  const nlohmann::json tok = {{"version", "1.0"},
                              {"truncation", nullptr},
                              {"padding", nullptr},
                              {"added_tokens", nlohmann::json::array()},
                              {"normalizer", nullptr},
                              {"pre_tokenizer", byte_level},
                              {"post_processor", nullptr},
                              {"decoder", byte_level},
                              {"model",
                               {{"type", "BPE"},
                                {"dropout", nullptr},
                                {"unk_token", nullptr},
                                {"continuing_subword_prefix", nullptr},
                                {"end_of_word_suffix", nullptr},
                                {"fuse_unk", false},
                                {"byte_fallback", false},
                                {"ignore_merges", false},
                                {"vocab", vocab},
                                {"merges", nlohmann::json::array()}}}};
  std::ofstream(dir / "tokenizer.json") << tok.dump();
  return dir;
}

Result<std::vector<Reference>> run_generate(const std::string& model,
                                            const std::vector<std::string>& adapters,
                                            const std::vector<nlohmann::json>& lines,
                                            const fs::path& work_dir) {
  const fs::path input = work_dir / "generate_input.jsonl";
  {
    std::ofstream in(input);
    for (nlohmann::json line : lines) {
      line["logprobs"] = 2;
      in << line.dump() << "\n";
    }
  }
  std::vector<std::string> argv = {loraserve_binary(), "generate",     "--model",     model,
                                   "--input",          input.string(), "--log-level", "warn"};
  for (const auto& a : adapters) {
    argv.push_back("--adapter");
    argv.push_back(a);
  }
  std::string out;
  const fs::path log = work_dir / "generate.log";
  const int rc = run_command(argv, &out, log);
  if (rc != 0) return internal_error("loraserve generate exited with {}: {}", rc, read_file(log));
  std::vector<Reference> refs;
  std::istringstream lines_in(out);
  std::string line;
  while (std::getline(lines_in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("error")) return internal_error("generate: {}", j.dump());
    Reference r;
    r.token_ids = j.at("token_ids").get<std::vector<int32_t>>();
    r.finish_reason = j.at("finish_reason").get<std::string>();
    for (const auto& lp : j.at("logprobs")) {
      r.logprobs.push_back(lp.at("logprob").get<float>());
      const auto& top = lp.at("top");
      r.gaps.push_back(top.size() >= 2
                           ? top[0].at("logprob").get<float>() - top[1].at("logprob").get<float>()
                           : 1e9f);
    }
    refs.push_back(std::move(r));
  }
  if (refs.size() != lines.size())
    return internal_error("generate printed {} results for {} lines", refs.size(), lines.size());
  return refs;
}

size_t tokens_to_compare(const Reference& ref, float eps) {
  for (size_t i = 0; i < ref.gaps.size(); ++i) {
    if (ref.gaps[i] < eps) return i;
  }
  return ref.token_ids.size();
}

Result<std::vector<std::string>> reflection_services(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&](int tag) {
    void* got = nullptr;
    bool ok = false;
    return cq.Next(&got, &ok) && got == reinterpret_cast<void*>(static_cast<intptr_t>(tag)) && ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!step(1)) return internal_error("reflection: the call did not start");
  // ServerReflectionRequest { list_services (7): "" }
  grpc::Slice request(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request_buffer(&request, 1);
  call->Write(request_buffer, reinterpret_cast<void*>(2));
  if (!step(2)) return internal_error("reflection: write failed");
  call->WritesDone(reinterpret_cast<void*>(3));
  if (!step(3)) return internal_error("reflection: writes-done failed");
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  if (!step(4)) return internal_error("reflection: no response");
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  std::vector<grpc::Slice> slices;
  (void)response.Dump(&slices);
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // ServerReflectionResponse { list_services_response (6) { service (1) { name (1) } } }
  google::protobuf::UnknownFieldSet top;
  if (!top.ParseFromString(bytes)) return internal_error("reflection: unparsable response");
  std::vector<std::string> names;
  for (int i = 0; i < top.field_count(); ++i) {
    if (top.field(i).number() != 6) continue;
    google::protobuf::UnknownFieldSet list;
    list.ParseFromString(top.field(i).length_delimited());
    for (int j = 0; j < list.field_count(); ++j) {
      google::protobuf::UnknownFieldSet service;
      service.ParseFromString(list.field(j).length_delimited());
      for (int k = 0; k < service.field_count(); ++k)
        if (service.field(k).number() == 1) names.push_back(service.field(k).length_delimited());
    }
  }
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }
  return names;
}

}  // namespace loraserve::testing
