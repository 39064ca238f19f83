#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

bool is_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// NFC, NFD, NFKC or NFKD through utf8proc; all four leave ASCII as it is.
class UnicodeForm : public Normalizer {
 public:
  explicit UnicodeForm(int options) : options_(options) {}
  Result<std::string> normalize(std::string_view text) const override {
    if (is_ascii(text)) return std::string(text);
    utf8proc_uint8_t* mapped = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                            static_cast<utf8proc_ssize_t>(text.size()), &mapped,
                                            static_cast<utf8proc_option_t>(options_));
    if (n < 0) {
      return invalid_argument_error("Unicode normalization failed: {}", utf8proc_errmsg(n));
    }
    std::string out(reinterpret_cast<const char*>(mapped), static_cast<size_t>(n));
    std::free(mapped);
    return out;
  }

 private:
  int options_;
};

class Replace : public Normalizer {
 public:
  Replace(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  Result<std::string> normalize(std::string_view text) const override {
    return pattern_->replace_all(text, content_);
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  Result<std::string> normalize(std::string_view text) const override {
    if (text.empty()) return std::string();
    return prefix_ + std::string(text);
  }

 private:
  std::string prefix_;
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  Result<std::string> normalize(std::string_view text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t next = begin;
        if (!is_unicode_whitespace(next_code_point(text, &next))) break;
        begin = next;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t pos = start;
        if (!is_unicode_whitespace(next_code_point(text, &pos))) break;
        end = start;
      }
    }
    return std::string(text.substr(begin, end - begin));
  }

 private:
  bool left_, right_;
};

// Per character, with Unicode's full lowercase mapping (as Rust's char::to_lowercase).
class Lowercase : public Normalizer {
 public:
  Result<std::string> normalize(std::string_view text) const override {
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    while (pos < text.size()) {
      const char32_t cp = next_code_point(text, &pos);
      if (cp == 0x130) {  // the one character whose lowercase is two: i + combining dot above
        out.append("i\xCC\x87");
        continue;
      }
      append_utf8(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))), &out);
    }
    return out;
  }
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  Result<std::string> normalize(std::string_view text) const override {
    std::string current(text);
    for (const auto& step : steps_) {
      LS_ASSIGN_OR_RETURN(current, step->normalize(current));
    }
    return current;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

template <typename T, typename... Args>
std::unique_ptr<Normalizer> make_step(Args&&... args) {
  return std::make_unique<T>(std::forward<Args>(args)...);
}

}  // namespace

Result<std::unique_ptr<Normalizer>> make_normalizer(const json& config, const std::string& path) {
  if (config.is_null()) return std::unique_ptr<Normalizer>();
  LS_RETURN_IF_ERROR(expect_object(config, path));
  LS_ASSIGN_OR_RETURN(std::string type, string_field(config, "type", path));
  const int kStable = UTF8PROC_STABLE;
  if (type == "NFC") return make_step<UnicodeForm>(kStable | UTF8PROC_COMPOSE);
  if (type == "NFD") return make_step<UnicodeForm>(kStable | UTF8PROC_DECOMPOSE);
  if (type == "NFKC") {
    return make_step<UnicodeForm>(kStable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "NFKD") {
    return make_step<UnicodeForm>(kStable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "Replace") {
    const json* pattern = find_field(config, "pattern");
    if (pattern == nullptr)
      return invalid_argument_error("{}: missing", field_path(path, "pattern"));
    LS_ASSIGN_OR_RETURN(auto regex, make_pattern(*pattern, field_path(path, "pattern")));
    LS_ASSIGN_OR_RETURN(std::string content, string_field(config, "content", path));
    return make_step<Replace>(std::move(regex), std::move(content));
  }
  if (type == "Prepend") {
    LS_ASSIGN_OR_RETURN(std::string prefix, string_field(config, "prepend", path));
    return make_step<Prepend>(std::move(prefix));
  }
  if (type == "Strip") {
    LS_ASSIGN_OR_RETURN(bool left, bool_field(config, "strip_left", true, path));
    LS_ASSIGN_OR_RETURN(bool right, bool_field(config, "strip_right", true, path));
    return make_step<Strip>(left, right);
  }
  if (type == "Lowercase") return make_step<Lowercase>();
  if (type == "Sequence") {
    const std::string list_path = field_path(path, "normalizers");
    const json* list = find_field(config, "normalizers");
    if (list == nullptr || !list->is_array()) {
      return invalid_argument_error("{}: expected a list of normalizers", list_path);
    }
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      LS_ASSIGN_OR_RETURN(auto step, make_normalizer((*list)[i], element_path(list_path, i)));
      if (step != nullptr) steps.push_back(std::move(step));
    }
    return make_step<Sequence>(std::move(steps));
  }
  return invalid_argument_error(
      "{}: unsupported normalizer type {} (supported: NFC, NFD, NFKC, NFKD, Replace, Prepend, "
      "Strip, "
      "Lowercase, Sequence)",
      field_path(path, "type"), excerpt(type));
}

}  // namespace loraserve::tokenizer
