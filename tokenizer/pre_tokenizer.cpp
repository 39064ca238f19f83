#include "tokenizer/pre_tokenizer.h"

#include <utf8proc.h>

#include <algorithm>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

template <typename T, typename... Args>
std::unique_ptr<PreTokenizer> make_step(Args&&... args) {
  return std::make_unique<T>(std::forward<Args>(args)...);
}

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Result<Behavior> parse_behavior(const json& config, const std::string& path) {
  LS_ASSIGN_OR_RETURN(std::string name, string_field(config, "behavior", path));
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return invalid_argument_error(
      "{}: unknown split behavior {} (expected Removed, Isolated, MergedWithPrevious, "
      "MergedWithNext or Contiguous)",
      field_path(path, "behavior"), excerpt(name));
}

// A stretch of a piece: [begin, end) and whether it is a delimiter (pattern match).
struct Segment {
  size_t begin, end;
  bool is_match;
};

// Cuts `piece` into the parts `behavior` keeps, as the Hugging Face NormalizedString::split does
// with the delimiters in `segments` (which cover the piece left to right).
Status split_piece(const Piece& piece, const std::vector<Segment>& segments, Behavior behavior,
                   const PieceSink& sink) {
  struct Part {
    size_t begin, end;
    bool remove;
  };
  std::vector<Part> parts;
  parts.reserve(segments.size());
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kRemoved:
      for (const Segment& s : segments) parts.push_back({s.begin, s.end, s.is_match});
      break;
    case Behavior::kIsolated:
      for (const Segment& s : segments) parts.push_back({s.begin, s.end, false});
      break;
    case Behavior::kContiguous:
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !parts.empty()) {
          parts.back().end = s.end;
        } else {
          parts.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !parts.empty()) {
          parts.back().end = s.end;
        } else {
          parts.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !parts.empty()) {
          parts.back().begin = it->begin;
        } else {
          parts.push_back({it->begin, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
  }
  for (const Part& p : parts) {
    if (p.remove || p.end == p.begin) continue;
    LS_RETURN_IF_ERROR(
        sink({piece.text.substr(p.begin, p.end - p.begin), piece.at_start && p.begin == 0}));
  }
  return ok_status();
}

// Delimiters and gaps of `text` from non-overlapping matches.
std::vector<Segment> segments_from_matches(size_t size, const std::vector<Match>& matches,
                                           bool invert) {
  std::vector<Segment> segments;
  segments.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const Match& m : matches) {
    if (prev < m.begin) segments.push_back({prev, m.begin, invert});
    segments.push_back({m.begin, m.end, !invert});
    prev = m.end;
  }
  if (prev < size) segments.push_back({prev, size, invert});
  return segments;
}

class Split : public PreTokenizer {
 public:
  Split(std::unique_ptr<Regex> pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

  Status pre_tokenize(Piece piece, const PieceSink& sink) const override {
    LS_ASSIGN_OR_RETURN(std::vector<Match> matches, pattern_->find_all(piece.text));
    return split_piece(piece, segments_from_matches(piece.text.size(), matches, invert_), behavior_,
                       sink);
  }

 private:
  std::unique_ptr<Regex> pattern_;
  Behavior behavior_;
  bool invert_;
};

// GPT-2's own split, used when a ByteLevel pre-tokenizer has use_regex.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, std::unique_ptr<Regex> split)
      : add_prefix_space_(add_prefix_space), split_(std::move(split)) {}

  Status pre_tokenize(Piece piece, const PieceSink& sink) const override {
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
    if (add_prefix_space_ && (piece.text.empty() || piece.text[0] != ' ')) {
      piece.text.insert(0, 1, ' ');
    }
    std::vector<Segment> words;
    if (split_ != nullptr) {
      LS_ASSIGN_OR_RETURN(std::vector<Match> matches, split_->find_all(piece.text));
      words = segments_from_matches(piece.text.size(), matches, false);  // gaps are words too
    } else {
      words.push_back({0, piece.text.size(), false});
    }
    for (const Segment& w : words) {
      if (w.end == w.begin) continue;
      Piece mapped{std::string(), piece.at_start && w.begin == 0};
      mapped.text.reserve((w.end - w.begin) * 2);
      alphabet.encode(std::string_view(piece.text).substr(w.begin, w.end - w.begin), &mapped.text);
      LS_RETURN_IF_ERROR(sink(std::move(mapped)));
    }
    return ok_status();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> split_;  // null: the piece stays whole
};

// Splits digits (Unicode Nd, Nl, No, as Rust's char::is_numeric) from the rest.
class Digits : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}

  Status pre_tokenize(Piece piece, const PieceSink& sink) const override {
    std::vector<Segment> segments;
    size_t pos = 0, gap = 0;
    while (pos < piece.text.size()) {
      const size_t begin = pos;
      const char32_t cp = next_code_point(piece.text, &pos);
      const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
      if (category == UTF8PROC_CATEGORY_ND || category == UTF8PROC_CATEGORY_NL ||
          category == UTF8PROC_CATEGORY_NO) {
        if (gap < begin) segments.push_back({gap, begin, false});
        segments.push_back({begin, pos, true});
        gap = pos;
      }
    }
    if (gap < piece.text.size()) segments.push_back({gap, piece.text.size(), false});
    return split_piece(piece, segments, individual_ ? Behavior::kIsolated : Behavior::kContiguous,
                       sink);
  }

 private:
  bool individual_;
};

// Spaces become the replacement character (U+2581 "▁"), one is prepended per the scheme, and
// with `split` every replacement character starts a new word.
class Metaspace : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}

  Status pre_tokenize(Piece piece, const PieceSink& sink) const override {
    std::string text;
    text.reserve(piece.text.size() + replacement_.size());
    for (char c : piece.text) {
      if (c == ' ') {
        text.append(replacement_);
      } else {
        text.push_back(c);
      }
    }
    const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
    if (!starts && (scheme_ == PrependScheme::kAlways ||
                    (scheme_ == PrependScheme::kFirst && piece.at_start))) {
      text.insert(0, replacement_);
    }
    if (!split_) return sink({std::move(text), piece.at_start});
    std::vector<Segment> segments;
    size_t gap = 0;
    for (size_t at = text.find(replacement_); at != std::string::npos;
         at = text.find(replacement_, at + replacement_.size())) {
      if (gap < at) segments.push_back({gap, at, false});
      segments.push_back({at, at + replacement_.size(), true});
      gap = at + replacement_.size();
    }
    if (gap < text.size()) segments.push_back({gap, text.size(), false});
    return split_piece({std::move(text), piece.at_start}, segments, Behavior::kMergedWithNext,
                       sink);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class Sequence : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  Status pre_tokenize(Piece piece, const PieceSink& sink) const override {
    return run(0, std::move(piece), sink);
  }

 private:
  // Feeds every word step `step` makes straight into the next step.
  Status run(size_t step, Piece&& piece, const PieceSink& sink) const {
    if (step == steps_.size()) return sink(std::move(piece));
    return steps_[step]->pre_tokenize(
        std::move(piece), [&](Piece&& word) { return run(step + 1, std::move(word), sink); });
  }

  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

Result<std::unique_ptr<PreTokenizer>> make_metaspace(const json& config, const std::string& path) {
  LS_ASSIGN_OR_RETURN(MetaspaceSettings m, parse_metaspace(config, path));
  LS_ASSIGN_OR_RETURN(bool split, bool_field(config, "split", true, path));
  return make_step<Metaspace>(std::move(m.replacement_utf8), m.scheme, split);
}

}  // namespace

Result<MetaspaceSettings> parse_metaspace(const json& config, const std::string& path) {
  MetaspaceSettings m;
  LS_ASSIGN_OR_RETURN(char32_t replacement, single_char_field(config, "replacement", path));
  append_utf8(replacement, &m.replacement_utf8);
  LS_ASSIGN_OR_RETURN(bool add_prefix_space, bool_field(config, "add_prefix_space", true, path));
  LS_ASSIGN_OR_RETURN(std::string scheme_name,
                      optional_string_field(config, "prepend_scheme", path, "always"));
  if (!add_prefix_space) scheme_name = "never";  // the older spelling of prepend_scheme
  if (scheme_name == "always") {
    m.scheme = PrependScheme::kAlways;
  } else if (scheme_name == "first") {
    m.scheme = PrependScheme::kFirst;
  } else if (scheme_name == "never") {
    m.scheme = PrependScheme::kNever;
  } else {
    return invalid_argument_error("{}: unknown prepend_scheme {} (expected always, first, never)",
                                  field_path(path, "prepend_scheme"), excerpt(scheme_name));
  }
  return m;
}

Result<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const json& config,
                                                         const std::string& path) {
  if (config.is_null()) return std::unique_ptr<PreTokenizer>();
  LS_RETURN_IF_ERROR(expect_object(config, path));
  LS_ASSIGN_OR_RETURN(std::string type, string_field(config, "type", path));
  if (type == "Split") {
    const json* pattern = find_field(config, "pattern");
    if (pattern == nullptr)
      return invalid_argument_error("{}: missing", field_path(path, "pattern"));
    LS_ASSIGN_OR_RETURN(auto regex, make_pattern(*pattern, field_path(path, "pattern")));
    LS_ASSIGN_OR_RETURN(Behavior behavior, parse_behavior(config, path));
    LS_ASSIGN_OR_RETURN(bool invert, bool_field(config, "invert", false, path));
    return make_step<Split>(std::move(regex), behavior, invert);
  }
  if (type == "ByteLevel") {
    LS_ASSIGN_OR_RETURN(bool add_prefix_space, bool_field(config, "add_prefix_space", true, path));
    LS_ASSIGN_OR_RETURN(bool use_regex, bool_field(config, "use_regex", true, path));
    std::unique_ptr<Regex> split;
    if (use_regex) {
      LS_ASSIGN_OR_RETURN(split, Regex::compile(kGpt2Pattern, path + " (GPT-2 split)"));
    }
    return make_step<ByteLevel>(add_prefix_space, std::move(split));
  }
  if (type == "Digits") {
    LS_ASSIGN_OR_RETURN(bool individual, bool_field(config, "individual_digits", false, path));
    return make_step<Digits>(individual);
  }
  if (type == "Metaspace") return make_metaspace(config, path);
  if (type == "Sequence") {
    const std::string list_path = field_path(path, "pretokenizers");
    const json* list = find_field(config, "pretokenizers");
    if (list == nullptr || !list->is_array()) {
      return invalid_argument_error("{}: expected a list of pre-tokenizers", list_path);
    }
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      LS_ASSIGN_OR_RETURN(auto step, make_pre_tokenizer((*list)[i], element_path(list_path, i)));
      if (step != nullptr) steps.push_back(std::move(step));
    }
    return make_step<Sequence>(std::move(steps));
  }
  return invalid_argument_error(
      "{}: unsupported pre-tokenizer type {} (supported: Split, ByteLevel, Digits, Metaspace, "
      "Sequence)",
      field_path(path, "type"), excerpt(type));
}

}  // namespace loraserve::tokenizer
