// `loraserve tokenize` as a user runs it: JSON lines in, {"ids"} / {"text"} / {"error"} lines
// out, with --tokenizer FILE or --model DIR.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/tokenizer/test_tokenizers.h"

namespace loraserve::tokenizer {
namespace {

using testing::json;
namespace fs = std::filesystem;

class TokenizeCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("loraserve_tokenize_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    // he=256 ll=257 hell=258 hello=259, <|bos|>=260.
    std::ofstream(dir_ / "tokenizer.json")
        << testing::byte_level_tokenizer({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}})
               .dump();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs the command on `input`; returns its stdout lines and sets *exit_code.
  std::vector<std::string> run(const std::string& args, const std::string& input, int* exit_code) {
    std::ofstream(dir_ / "input.jsonl") << input;
    const std::string command = std::string(LORASERVE_BINARY) + " tokenize " + args + " --input " +
                                (dir_ / "input.jsonl").string() + " 2>/dev/null";
    FILE* pipe = popen(command.c_str(), "r");
    EXPECT_NE(pipe, nullptr);
    std::string out;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
    const int status = pclose(pipe);
    *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::vector<std::string> lines;
    size_t start = 0;
    for (size_t end; (end = out.find('\n', start)) != std::string::npos; start = end + 1) {
      lines.push_back(out.substr(start, end - start));
    }
    return lines;
  }

  fs::path dir_;
};

TEST_F(TokenizeCommandTest, EncodesTextLines) {
  int code = -1;
  const auto lines =
      run("--tokenizer " + (dir_ / "tokenizer.json").string(),
          "{\"text\": \"hello\"}\n\n{\"text\": \"hi\", \"add_special_tokens\": false}\n"
          "{\"text\": 3}\nnot json\n{\"prompt\": \"x\"}\n{\"text\": \"\\udc80\"}\n",
          &code);
  EXPECT_EQ(code, 0);
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(json::parse(lines[0]), json::parse(R"({"ids": [260, 259]})"));
  EXPECT_EQ(json::parse(lines[1]), json::parse(R"({"ids": [104, 105]})"));
  for (size_t i = 2; i < lines.size(); ++i) {
    const json error = json::parse(lines[i]);
    EXPECT_EQ(error["error"]["code"], "INVALID_ARGUMENT") << lines[i];
  }
  EXPECT_NE(lines[3].find("not valid JSON"), std::string::npos);
  EXPECT_NE(lines[4].find("unknown field 'prompt'"), std::string::npos);
}

TEST_F(TokenizeCommandTest, DecodesIdLinesFromAModelFolder) {
  int code = -1;
  const auto lines = run("--model " + dir_.string() + " --decode",
                         "{\"ids\": [260, 259, 32, 258]}\n"
                         "{\"ids\": [260, 259], \"skip_special_tokens\": false}\n"
                         "{\"ids\": [-5]}\n{\"ids\": \"x\"}\n{\"ids\": [104, 99999, 105]}\n",
                         &code);
  EXPECT_EQ(code, 0);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(json::parse(lines[0]), json::parse(R"({"text": "hello hell"})"));
  EXPECT_EQ(json::parse(lines[1]), json::parse(R"({"text": "<|bos|>hello"})"));
  EXPECT_EQ(json::parse(lines[2])["error"]["code"], "INVALID_ARGUMENT");
  EXPECT_NE(lines[2].find("-5"), std::string::npos);
  EXPECT_EQ(json::parse(lines[3])["error"]["code"], "INVALID_ARGUMENT");
  // An id with no token decodes to nothing, as Hugging Face's decode.
  EXPECT_EQ(json::parse(lines[4]), json::parse(R"({"text": "hi"})"));
}

TEST_F(TokenizeCommandTest, FailsClearlyWithoutATokenizer) {
  int code = -1;
  EXPECT_TRUE(run("--model " + (dir_ / "missing").string(), "{\"text\": \"a\"}\n", &code).empty());
  EXPECT_EQ(code, 2);
  EXPECT_TRUE(run("", "{\"text\": \"a\"}\n", &code).empty());
  EXPECT_EQ(code, 2);
  std::ofstream(dir_ / "broken.json") << "{\"model\": ";
  EXPECT_TRUE(
      run("--tokenizer " + (dir_ / "broken.json").string(), "{\"text\": \"a\"}\n", &code).empty());
  EXPECT_EQ(code, 1);
}

}  // namespace
}  // namespace loraserve::tokenizer
