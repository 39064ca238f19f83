// ChatTemplate's own contract, with outputs worked out by hand: finding the template and special
// tokens in a model folder, what a render sees, errors that name the template line, and the
// limits that keep a hostile template or conversation from hanging or crashing the server.
// (Byte-for-byte agreement with jinja2 is reference_test.cpp's job.)
#include <gtest/gtest.h>
#include <pthread.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "chat/chat_template.h"

namespace loraserve::chat {
namespace {

using ordered_json = nlohmann::ordered_json;
namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/chat_template_test_XXXXXX";
    path_ = mkdtemp(name);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }
  void write(const std::string& file, const std::string& text) const {
    std::ofstream(path_ + "/" + file, std::ios::binary) << text;
  }

 private:
  std::string path_;
};

SpecialTokens llama_tokens() {
  SpecialTokens t;
  t.bos_token = "<s>";
  t.eos_token = "</s>";
  return t;
}

std::unique_ptr<ChatTemplate> parse_ok(const std::string& source,
                                       SpecialTokens tokens = llama_tokens(),
                                       const RenderLimits& limits = {}) {
  Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::parse(source, std::move(tokens), limits);
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  return t.ok() ? std::move(t).value() : nullptr;
}

std::string render_ok(const ChatTemplate& t, const ordered_json& messages, bool gen = false,
                      const ordered_json& extra = nullptr) {
  Result<std::string> out = t.render(messages, gen, extra);
  EXPECT_TRUE(out.ok()) << out.status().to_string();
  return out.ok() ? *out : "";
}

Status render_error(const std::string& source, const ordered_json& messages = ordered_json::array(),
                    const RenderLimits& limits = {}) {
  auto t = parse_ok(source, llama_tokens(), limits);
  if (!t) return internal_error("did not parse");
  Result<std::string> out = t->render(messages, false);
  EXPECT_FALSE(out.ok()) << "rendered: " << (out.ok() ? out->substr(0, 200) : "");
  return out.status();
}

const ordered_json kChat = ordered_json::parse(R"([
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "Hi"},
  {"role": "assistant", "content": "Hello!"},
  {"role": "user", "content": [{"type": "text", "text": "Bye"}]}])");

constexpr const char* kChatMl =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}{{ p.text }}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

// Which templates get content lists: those that loop over a message's content, filter it or
// index it, directly or through a variable set from it; not those that only print it, trim it
// or check that it is a string (Qwen 3 renders a list as "").
TEST(ChatTemplate, TakesContentListsWhenItReadsThemAsLists) {
  for (const char* source : {
           "{% for m in messages %}{% for part in m['content'] %}{{ part.text }}{% endfor %}"
           "{% endfor %}",
           "{% for m in messages %}{% if m['content'] is string %}{{ m['content'] }}{% else %}"
           "{{ m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
           "| join }}{% endif %}{% endfor %}",
           "{% for m in messages %}{%- set content = m.content -%}"
           "{% for item in content %}{{ item['text'] }}{% endfor %}{% endfor %}",
           "{% for m in messages %}{{ m[\"content\"][0].text }}{% endfor %}",
       }) {
    SCOPED_TRACE(source);
    EXPECT_TRUE(ChatTemplate::source_takes_content_lists(source));
  }
  for (const char* source : {
           "{% for m in messages %}{{ m['content'] | trim }}{% endfor %}",
           "{% for message in messages %}{%- if message.content is string %}{%- set content = "
           "message.content %}{%- else %}{%- set content = '' %}{%- endif %}{{ content }}"
           "{% endfor %}",
           "{% for m in messages %}{{ m.content }}{% endfor %}",
           "{% for m in messages %}{{ m.contents | first }}{% endfor %}",
       }) {
    SCOPED_TRACE(source);
    EXPECT_FALSE(ChatTemplate::source_takes_content_lists(source));
  }
  // A hostile template's megabyte of whitespace inside a tag is read in one flat pass (a
  // backtracking regex recursed per character and overflowed the stack at 100 KB).
  const std::string spaces(1 << 20, ' ');
  EXPECT_TRUE(ChatTemplate::source_takes_content_lists("{% set a =" + spaces + "m['content']" +
                                                       spaces + "%}{% for p in" + spaces + "a %}"));
  EXPECT_FALSE(ChatTemplate::source_takes_content_lists("{% set a =" + spaces + "m['content'] | " +
                                                        "trim %}{{ a" + spaces + "}}"));
}

TEST(ChatTemplate, RendersAConversation) {
  auto t = parse_ok(kChatMl);
  EXPECT_EQ(render_ok(*t, kChat, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(render_ok(*t, ordered_json::array(), false), "");
}

TEST(ChatTemplate, SeesSpecialTokensToolsAndExtraContext) {
  SpecialTokens tokens;
  tokens.bos_token = "<B>";
  tokens.pad_token = "";  // empty tokens are left out, as in transformers' special_tokens_map
  tokens.additional_special_tokens = {"<x>", "<y>"};
  auto t = parse_ok(
      "{{ bos_token }}|{{ eos_token is defined }}|{{ pad_token is defined }}|"
      "{{ additional_special_tokens|join(',') }}|{{ tools }}|{{ documents }}|{{ flag }}",
      tokens);
  EXPECT_EQ(render_ok(*t, ordered_json::array()), "<B>|False|False|<x>,<y>|None|None|");
  EXPECT_EQ(render_ok(*t, ordered_json::array(), false,
                      {{"flag", true}, {"tools", ordered_json::array({1})}}),
            "<B>|False|False|<x>,<y>|[1]|None|True");
  // Extra context overrides special tokens (transformers' kwargs do), but not the messages.
  EXPECT_EQ(render_ok(*t, ordered_json::array(), false, {{"bos_token", "<other>"}}).substr(0, 7),
            "<other>");
  Result<std::string> bad = t->render(ordered_json::array(), false, {{"messages", 1}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("messages"), std::string::npos);
}

TEST(ChatTemplate, KeepsKeyOrderOfTheInput) {
  auto t =
      parse_ok("{{ messages[0]|tojson }}|{% for k, v in messages[0].items() %}{{ k }}{% endfor %}");
  const ordered_json messages =
      ordered_json::parse(R"([{"role": "user", "content": "x", "a": 1}])");
  EXPECT_EQ(render_ok(*t, messages), R"({"role": "user", "content": "x", "a": 1}|rolecontenta)");
}

TEST(ChatTemplate, RefusesInputItCannotPassThrough) {
  auto t = parse_ok("{{ messages }}");
  EXPECT_EQ(t->render(ordered_json::object(), false).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->render(ordered_json::array(), false, ordered_json::array()).status().code(),
            StatusCode::kInvalidArgument);
  // Text that is not UTF-8, named by where it is.
  ordered_json bad = ordered_json::array({{{"role", "user"}, {"content", std::string("a\xff")}}});
  Result<std::string> out = t->render(bad, false);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("messages[0].content"), std::string::npos)
      << out.status().message();
  // Nesting deeper than any conversation needs.
  ordered_json deep = ordered_json::array();
  for (int i = 0; i < 1000; ++i) deep = ordered_json::array({deep});
  out = t->render(ordered_json::array({{{"role", "user"}, {"content", deep}}}), false);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("deeper"), std::string::npos) << out.status().message();
}

TEST(ChatTemplate, SyntaxErrorsNameTheLine) {
  Result<std::unique_ptr<ChatTemplate>> t =
      ChatTemplate::parse("line 1\n{% if x %}\nline 3\n{{ 1 + }}\n{% endif %}", llama_tokens());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("line 4"), std::string::npos) << t.status().message();
  EXPECT_NE(t.status().message().find("TemplateSyntaxError"), std::string::npos);

  t = ChatTemplate::parse("a\n\n{% for x in y %}never closed", llama_tokens());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("endfor"), std::string::npos) << t.status().message();

  t = ChatTemplate::parse("{{ x|no_such_filter }}", llama_tokens());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("No filter named 'no_such_filter'"), std::string::npos);
  t = ChatTemplate::parse("{% include 'other.jinja' %}", llama_tokens());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("include"), std::string::npos);
  t = ChatTemplate::parse(std::string("{{ '\xc3' }}"), llama_tokens());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("UTF-8"), std::string::npos);
}

TEST(ChatTemplate, RaiseExceptionAndRuntimeErrorsNameTheLine) {
  Status s = render_error(
      "{% for m in messages %}\n"
      "{% if m.role == 'system' %}\n"
      "{{ raise_exception('System role not supported') }}\n"
      "{% endif %}{% endfor %}",
      kChat);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "chat template line 3: TemplateError: System role not supported");

  // A message that quotes the input shows an excerpt of it.
  s = render_error("{{ raise_exception('bad role ' + messages[0].role) }}",
                   ordered_json::parse(R"([{"role": ")" + std::string(3000, 'r') + R"("}])"));
  EXPECT_LT(s.message().size(), 320u) << s.message();
  EXPECT_NE(s.message().find("… (3009 bytes)"), std::string::npos) << s.message();

  s = render_error("ok\n{{ 'a' + messages[0].content }}",
                   ordered_json::parse(R"([{"content": 1}])"));
  EXPECT_EQ(s.message(),
            "chat template line 2: TypeError: can only concatenate str (not \"int\") to str");

  s = render_error("\n\n{{ nothing.here }}");
  EXPECT_EQ(s.message(), "chat template line 3: UndefinedError: 'nothing' is undefined");

  s = render_error("{% set l = [] %}\n{{ l.append(1) }}");
  EXPECT_EQ(s.message(),
            "chat template line 2: SecurityError: access to attribute 'append' of "
            "'list' object is unsafe.");

  // A control character or a lone byte of UTF-8 is escaped, never copied into the message
  // (found by the chat_template fuzz target).
  s = render_error("{{ '%\x01' % 1 }}");
  EXPECT_EQ(s.message(),
            "chat template line 1: ValueError: unsupported format character '\\x01' (0x1) at "
            "index 1");
  s = render_error("{{ '%\xc3\xa9' % 1 }}");
  EXPECT_EQ(s.message().find('\xc3'), std::string::npos) << s.message();
}

TEST(ChatTemplate, LoopsAreBounded) {
  // The sandbox's range() limit, as in transformers.
  Status s = render_error("{% for i in range(100001) %}{% endfor %}");
  EXPECT_NE(s.message().find("OverflowError: Range too big"), std::string::npos) << s.message();
  // Nested loops within the range limit would run 10^15 steps: the step budget ends them.
  s = render_error(
      "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
      "{% endfor %}{% endfor %}{% endfor %}");
  EXPECT_NE(s.message().find("LimitError"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("evaluation steps"), std::string::npos) << s.message();
  // A lower budget, set by the caller.
  RenderLimits small;
  small.max_steps = 1000;
  s = render_error("{% for i in range(2000) %}{% endfor %}", ordered_json::array(), small);
  EXPECT_NE(s.message().find("1000 evaluation steps"), std::string::npos) << s.message();
}

TEST(ChatTemplate, RecursionIsBounded) {
  Status s = render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(s.message().find("LimitError"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("macro and recursive loop calls nest deeper than 64"),
            std::string::npos)
      << s.message();
  s = render_error(
      "{% set ns = namespace(t=[]) %}{% for i in range(100) %}{% set ns.t = [ns.t] %}{% endfor %}"
      "{% for x in [ns.t] recursive %}{{ loop(x) }}{% endfor %}");
  EXPECT_NE(s.message().find("nest deeper than 64"), std::string::npos) << s.message();
  // A caller that calls itself through its macro.
  s = render_error(
      "{% macro m() %}{{ caller() }}{% endmacro %}"
      "{% macro r() %}{% call m() %}{{ r() }}{% endcall %}{% endmacro %}{{ r() }}");
  EXPECT_NE(s.message().find("nest deeper"), std::string::npos) << s.message();
}

// The deepest render the limits allow (nested blocks in a macro that recurses until stopped) on a
// thread with a 2 MiB stack (a quarter of Linux's default; the sanitizers' frames fit too).
TEST(ChatTemplate, DeepRendersFitInASmallStack) {
  std::string body = "{{ f(n + 1) }}";
  for (int i = 0; i < 90; ++i) body = "{% if true %}" + body + "{% endif %}";
  auto t = parse_ok("{% macro f(n) %}" + body + "{% endmacro %}{{ f(0) }}");
  ASSERT_TRUE(t);
  struct Job {
    const ChatTemplate* t;
    Status status;
  } job{t.get(), ok_status()};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 2u << 20);
  pthread_t thread;
  ASSERT_EQ(pthread_create(
                &thread, &attr,
                [](void* arg) -> void* {
                  auto* j = static_cast<Job*>(arg);
                  j->status = j->t->render(ordered_json::array(), false).status();
                  return nullptr;
                },
                &job),
            0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
  EXPECT_NE(job.status.message().find("nest deeper than 500"), std::string::npos)
      << job.status.to_string();
}

TEST(ChatTemplate, SizesAreBounded) {
  // Doubling a string: the size bound stops it long before memory runs out.
  Status s = render_error(
      "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}"
      "{% endfor %}");
  EXPECT_NE(s.message().find("bytes"), std::string::npos) << s.message();
  s = render_error("{{ 'x' * 1000000000000 }}");
  EXPECT_NE(s.message().find("LimitError"), std::string::npos) << s.message();
  s = render_error("{{ [1] * 1000000000000 }}");
  EXPECT_NE(s.message().find("LimitError"), std::string::npos) << s.message();
  // Lists that share themselves: printing would expand 2^60 elements.
  s = render_error(
      "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}"
      "{% endfor %}{{ ns.l }}");
  EXPECT_NE(s.message().find("LimitError"), std::string::npos) << s.message();
  // Values nested deeper than the bound.
  s = render_error(
      "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}"
      "{% endfor %}");
  EXPECT_NE(s.message().find("nests deeper"), std::string::npos) << s.message();
  // Output bounded by the caller's limit.
  RenderLimits small;
  small.max_string_bytes = 100;
  s = render_error("{% for i in range(50) %}{{ i }}xxx{% endfor %}", ordered_json::array(), small);
  EXPECT_NE(s.message().find("more than 100 bytes"), std::string::npos) << s.message();
}

TEST(ChatTemplate, DeepTemplatesAreRefusedWhenParsed) {
  for (const std::string& deep : {std::string(5000, '(') + "1" + std::string(5000, ')'),
                                  std::string(5000, '[') + std::string(5000, ']')}) {
    Result<std::unique_ptr<ChatTemplate>> t =
        ChatTemplate::parse("{{ " + deep + " }}", llama_tokens());
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("deeper than"), std::string::npos) << t.status().message();
  }
  std::string chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) chain += " + 1";
  Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::parse(chain + " }}", llama_tokens());
  ASSERT_FALSE(t.ok());
  std::string ifs;
  for (int i = 0; i < 1000; ++i) ifs += "{% if true %}";
  t = ChatTemplate::parse(ifs, llama_tokens());
  ASSERT_FALSE(t.ok());
  std::string attributes = "{{ x";
  for (int i = 0; i < 100000; ++i) attributes += ".a";
  t = ChatTemplate::parse(attributes + " }}", llama_tokens());
  ASSERT_FALSE(t.ok());
}

// Mutated templates (bytes replaced, inserted, deleted, with a bias to Jinja's own characters)
// and mutated conversations: every outcome is a render or INVALID_ARGUMENT, never a crash, a
// hang or another code. A small deterministic fuzz pass that runs everywhere.
TEST(ChatTemplate, SurvivesMutatedTemplatesAndInput) {
  const std::string seeds[] = {
      kChatMl,
      "{%- set ns = namespace(sys='') -%}{%- for m in messages -%}{%- if m.role == 'system' -%}"
      "{%- set ns.sys = m.content|trim -%}{%- elif m.role == 'user' -%}[INST] {{ ns.sys ~ "
      "m['content'] }} [/INST]{%- else -%}{{ m.content|tojson(indent=2) }}{{ eos_token }}"
      "{%- endif -%}{%- endfor -%}{% macro f(x, y=2) %}{{ x * y }}{{ caller() if caller }}"
      "{% endmacro %}{% call f(3) %}c{% endcall %}{{ range(5)|select('odd')|list }}"
      "{% for k, v in {'a': [1, (2, 3)]}.items() recursive %}{{ k }}{{ loop.index }}{% endfor %}",
  };
  const std::string alphabet = "{}%#-+~|.,:()[]'\" \n\tabcxyz019_=*/<>!";
  std::mt19937 rng(20240611);
  RenderLimits limits;
  limits.max_steps = 200'000;
  limits.max_string_bytes = 1 << 16;
  int rendered = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string source = seeds[i % 2];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !source.empty(); ++e) {
      const size_t at = rng() % source.size();
      const char c =
          rng() % 4 == 0 ? static_cast<char>(rng() % 256) : alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          source[at] = c;
          break;
        case 1:
          source.insert(at, 1, c);
          break;
        default:
          source.erase(at, 1 + rng() % 8);
      }
    }
    Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::parse(source, llama_tokens(), limits);
    if (!t.ok()) {
      ASSERT_EQ(t.status().code(), StatusCode::kInvalidArgument) << t.status().to_string();
      continue;
    }
    ordered_json messages = kChat;
    if (i % 3 == 0) messages[1]["content"] = ordered_json::array({1, nullptr, {{"x", "y"}}});
    if (i % 5 == 0) messages.push_back({{"role", 7}});
    Result<std::string> out = (*t)->render(messages, i % 2 == 0);
    if (out.ok()) {
      ++rendered;
    } else {
      ASSERT_EQ(out.status().code(), StatusCode::kInvalidArgument) << out.status().to_string();
    }
  }
  EXPECT_GT(rendered, 100);
}

TEST(ChatTemplate, StrftimeNowIsLocalTime) {
  auto t = parse_ok("{{ strftime_now('%Y-%m-%d') }}");
  char want[32];
  const time_t now = time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::strftime(want, sizeof(want), "%Y-%m-%d", &local);
  const std::string got = render_ok(*t, ordered_json::array());
  // A render across midnight may see the next day; never any other value.
  if (got != want) {
    const time_t later = time(nullptr);
    localtime_r(&later, &local);
    std::strftime(want, sizeof(want), "%Y-%m-%d", &local);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(render_ok(*parse_ok("{{ strftime_now('%f')|length }}"), ordered_json::array()), "6");
}

TEST(ChatTemplate, RendersFromManyThreadsAtOnce) {
  auto t = parse_ok(kChatMl);
  const std::string want = render_ok(*t, kChat, true);
  std::vector<std::thread> threads;
  std::vector<int> wrong(8, 0);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 200; ++k) {
        Result<std::string> out = t->render(kChat, true);
        wrong[i] += !out.ok() || *out != want;
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(wrong[i], 0) << "thread " << i;
}

TEST(ChatTemplateLoad, FromTokenizerConfig) {
  TempDir dir;
  dir.write("tokenizer_config.json", R"({
    "bos_token": {"__type": "AddedToken", "content": "<|begin|>", "lstrip": false},
    "eos_token": "<|end|>", "unk_token": null, "pad_token": "",
    "additional_special_tokens": ["<a>", {"content": "<b>"}],
    "added_tokens_decoder": {},
    "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"})");
  Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::load(dir.path());
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ((*t)->special_tokens().bos_token, "<|begin|>");
  EXPECT_EQ((*t)->special_tokens().eos_token, "<|end|>");
  EXPECT_FALSE((*t)->special_tokens().unk_token.has_value());
  EXPECT_EQ((*t)->special_tokens().additional_special_tokens,
            (std::vector<std::string>{"<a>", "<b>"}));
  EXPECT_EQ(render_ok(**t, ordered_json::parse(R"([{"content": "x"}])")), "<|begin|>x<|end|>");
}

TEST(ChatTemplateLoad, NamedTemplatesUseDefault) {
  TempDir dir;
  dir.write("tokenizer_config.json", R"({"chat_template": [
    {"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]})");
  Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::load(dir.path());
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ((*t)->source(), "plain");

  dir.write("tokenizer_config.json", R"({"chat_template": [{"name": "rag", "template": "r"}]})");
  t = ChatTemplate::load(dir.path());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("\"default\""), std::string::npos) << t.status().message();

  dir.write("tokenizer_config.json", R"({"chat_template": 7})");
  t = ChatTemplate::load(dir.path());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("tokenizer_config.json"), std::string::npos);
}

TEST(ChatTemplateLoad, JinjaFileWinsOverTheConfig) {
  TempDir dir;
  dir.write("tokenizer_config.json", R"({"eos_token": "E", "chat_template": "from config"})");
  dir.write("chat_template.jinja", "from file {{ eos_token }}\n");
  Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::load(dir.path());
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(render_ok(**t, ordered_json::array()), "from file E");
}

TEST(ChatTemplateLoad, ModelsWithoutATemplate) {
  TempDir dir;
  Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::load(dir.path());
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  dir.write("tokenizer_config.json", R"({"bos_token": "<s>", "chat_template": null})");
  t = ChatTemplate::load(dir.path());
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  EXPECT_NE(t.status().message().find("no chat template"), std::string::npos);
  // A processor's chat_template.json, as vLLM reads it.
  dir.write("chat_template.json", R"({"chat_template": "processor {{ bos_token }}"})");
  t = ChatTemplate::load(dir.path());
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(render_ok(**t, ordered_json::array()), "processor <s>");
}

TEST(ChatTemplateLoad, BadFilesAreNamed) {
  TempDir dir;
  dir.write("tokenizer_config.json", "{not json");
  Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::load(dir.path());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("tokenizer_config.json"), std::string::npos);

  dir.write("tokenizer_config.json", R"({"eos_token": 5, "chat_template": "x"})");
  t = ChatTemplate::load(dir.path());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("eos_token"), std::string::npos) << t.status().message();

  dir.write("tokenizer_config.json", "{\"chat_template\": \"line 1\\n{% for %}\"}");
  t = ChatTemplate::load(dir.path());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("tokenizer_config.json"), std::string::npos);
  EXPECT_NE(t.status().message().find("line 2"), std::string::npos) << t.status().message();

  fs::remove(dir.path() + "/tokenizer_config.json");
  fs::create_directory(dir.path() + "/chat_template.jinja");
  t = ChatTemplate::load(dir.path());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("not a regular file"), std::string::npos);
}

TEST(ChatTemplateLoad, LegacySpecialTokensMap) {
  // Without added_tokens_decoder, transformers lets special_tokens_map.json win.
  TempDir dir;
  dir.write("tokenizer_config.json",
            R"({"bos_token": "<old>", "chat_template": "{{ bos_token }}"})");
  dir.write("special_tokens_map.json", R"({"bos_token": {"content": "<new>"}})");
  Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::load(dir.path());
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(render_ok(**t, ordered_json::array()), "<new>");
  // With it, the map is not read.
  dir.write(
      "tokenizer_config.json",
      R"({"bos_token": "<old>", "added_tokens_decoder": {}, "chat_template": "{{ bos_token }}"})");
  t = ChatTemplate::load(dir.path());
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(render_ok(**t, ordered_json::array()), "<old>");
}

TEST(ChatTemplateLoad, DemoModelShipsATemplate) {
  Result<std::unique_ptr<ChatTemplate>> t = ChatTemplate::load("models/demo");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  // The demo's prompt format (models/demo/README.md): <|bos|>Input: {word}\nOutput: {answer}<|eos|>
  EXPECT_EQ(render_ok(**t, ordered_json::parse(R"([{"role": "user", "content": "hello"}])"), true),
            "<|bos|>Input: hello\nOutput: ");
  EXPECT_EQ(render_ok(**t, ordered_json::parse(R"([{"role": "user", "content": "abc"},
                                              {"role": "assistant", "content": "cba"},
                                              {"role": "user", "content": [{"type": "text", "text": "dog"}]}])"),
                      true),
            "<|bos|>Input: abc\nOutput: cba<|eos|><|bos|>Input: dog\nOutput: ");
  Result<std::string> system =
      (*t)->render(ordered_json::parse(R"([{"role": "system", "content": "x"}])"), true);
  ASSERT_FALSE(system.ok());
  EXPECT_NE(system.status().message().find("system"), std::string::npos);
}

}  // namespace
}  // namespace loraserve::chat
