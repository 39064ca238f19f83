#include "tokenizer/bpe_model.h"

#include <queue>

#include "tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

constexpr size_t kMaxCachedWordBytes = 256;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// One symbol of a word being merged; a merged-away symbol has alive == false.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

// A candidate merge of symbols[pos] with its next symbol. Lowest rank first, then leftmost.
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator<(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;  // std::priority_queue pops the largest
  }
};

}  // namespace

BpeModel::WordCache::WordCache() {
  for (Shard& shard : shards_) shard.slots.resize(kSlotsPerShard);
}

bool BpeModel::WordCache::find(std::string_view word, std::vector<int32_t>* ids) const {
  const uint64_t hash = StringHash{}(word);
  Shard& shard = shards_[hash % kShards];
  std::lock_guard<std::mutex> lock(shard.mutex);
  const Slot& slot = shard.slots[(hash / kShards) % kSlotsPerShard];
  if (slot.hash != hash || slot.word != word || slot.ids.empty()) return false;
  ids->insert(ids->end(), slot.ids.begin(), slot.ids.end());
  return true;
}

void BpeModel::WordCache::insert(std::string_view word, const std::vector<int32_t>& ids) const {
  const uint64_t hash = StringHash{}(word);
  Shard& shard = shards_[hash % kShards];
  std::lock_guard<std::mutex> lock(shard.mutex);
  Slot& slot = shard.slots[(hash / kShards) % kSlotsPerShard];
  slot.hash = hash;
  slot.word.assign(word);
  slot.ids = ids;
}

Result<std::unique_ptr<BpeModel>> BpeModel::from_json(const json& config, const std::string& path) {
  std::unique_ptr<BpeModel> model(new BpeModel());
  const json* vocab = find_field(config, "vocab");
  if (vocab == nullptr) return invalid_argument_error("{}: missing", field_path(path, "vocab"));
  LS_RETURN_IF_ERROR(model->load_vocab(*vocab, field_path(path, "vocab")));
  LS_ASSIGN_OR_RETURN(model->continuing_subword_prefix_,
                      optional_string_field(config, "continuing_subword_prefix", path));
  const json* merges = find_field(config, "merges");
  if (merges != nullptr && !merges->is_null()) {
    LS_RETURN_IF_ERROR(model->load_merges(*merges, field_path(path, "merges")));
  }
  LS_ASSIGN_OR_RETURN(model->end_of_word_suffix_,
                      optional_string_field(config, "end_of_word_suffix", path));
  LS_ASSIGN_OR_RETURN(model->fuse_unk_, bool_field(config, "fuse_unk", false, path));
  LS_ASSIGN_OR_RETURN(model->byte_fallback_, bool_field(config, "byte_fallback", false, path));
  LS_ASSIGN_OR_RETURN(model->ignore_merges_, bool_field(config, "ignore_merges", false, path));
  if (const json* dropout = find_field(config, "dropout");
      dropout != nullptr && !dropout->is_null() && !(dropout->is_number() && *dropout == 0)) {
    return invalid_argument_error("{}: BPE dropout {} is not supported (encoding must be exact)",
                                  field_path(path, "dropout"), shown(*dropout));
  }
  LS_ASSIGN_OR_RETURN(std::string unk, optional_string_field(config, "unk_token", path));
  if (!unk.empty()) {
    auto id = model->token_to_id(unk);
    if (!id) {
      return invalid_argument_error("{}: unk_token {} is not in the vocabulary",
                                    field_path(path, "unk_token"), excerpt(unk));
    }
    model->unk_id_ = *id;
  }
  for (int b = 0; b < 256; ++b) {
    model->byte_ids_[b] = model->token_to_id(fmt::format("<0x{:02X}>", b)).value_or(-1);
  }
  return model;
}

Status BpeModel::load_vocab(const json& vocab, const std::string& path) {
  if (!vocab.is_object()) {
    return invalid_argument_error("{}: expected an object of token -> id, got {}", path,
                                  shown(vocab));
  }
  vocab_.reserve(vocab.size());
  int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    auto id_or = token_id_value(it.value(), path);
    if (!id_or.ok()) {
      // The path is built only here: the vocabulary may hold hundreds of thousands of entries.
      return token_id_value(it.value(), fmt::format("{}[{}]", path, json_excerpt(json(it.key()))))
          .status();
    }
    const int32_t id = *id_or;
    vocab_.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  max_id_ = max_id;
  tokens_.reserve(vocab_.size());
  for (const auto& [token, id] : vocab_) {
    auto [it, inserted] = tokens_.emplace(id, &token);
    if (!inserted && token < *it->second) it->second = &token;  // one id, two tokens: keep one
  }
  return ok_status();
}

Status BpeModel::load_merges(const json& merges, const std::string& path) {
  if (!merges.is_array()) {
    return invalid_argument_error("{}: expected a list of merges, got {}", path, shown(merges));
  }
  merges_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    std::string left, right;
    if (m.is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) {
        return invalid_argument_error("{}: {} is not two tokens separated by a space",
                                      element_path(path, i), excerpt(s));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return invalid_argument_error("{}: expected \"a b\" or [\"a\", \"b\"], got {}",
                                    element_path(path, i), shown(m));
    }
    auto left_id = token_to_id(left);
    auto right_id = token_to_id(right);
    if (!left_id || !right_id) {
      return invalid_argument_error("{}: token {} is not in the vocabulary", element_path(path, i),
                                    excerpt(left_id ? right : left));
    }
    std::string merged = left;
    merged.append(right.compare(0, continuing_subword_prefix_.size(), continuing_subword_prefix_) ==
                          0
                      ? right.substr(continuing_subword_prefix_.size())
                      : right);
    auto merged_id = token_to_id(merged);
    if (!merged_id) {
      return invalid_argument_error("{}: the merged token {} is not in the vocabulary",
                                    element_path(path, i), excerpt(merged));
    }
    // A pair listed twice keeps its last rank, as in the reference implementations.
    merges_[pair_key(*left_id, *right_id)] = MergeRule{static_cast<int32_t>(i), *merged_id};
  }
  return ok_status();
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  auto it = tokens_.find(id);
  return it == tokens_.end() ? nullptr : it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  if (cacheable && cache_.find(word, ids)) return;
  const size_t first = ids->size();
  std::optional<int32_t> whole;
  if (ignore_merges_) whole = token_to_id(word);
  if (whole) {
    ids->push_back(*whole);
  } else {
    merge_word(word, ids);
  }
  if (cacheable) cache_.insert(word, std::vector<int32_t>(ids->begin() + first, ids->end()));
}

// The Hugging Face BPE word algorithm: one symbol per character (or its <0xXX> bytes, or unk),
// then the lowest-ranked adjacent pair is merged until no pair has a merge rule.
void BpeModel::merge_word(std::string_view word, std::vector<int32_t>* ids) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  };
  int32_t pending_unk = -1;  // an unk not yet added (fuse_unk grows it)
  std::string decorated;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t begin = pos;
    pos += utf8_length(static_cast<unsigned char>(word[pos]));
    std::string_view piece = word.substr(begin, pos - begin);
    if ((begin > 0 && !continuing_subword_prefix_.empty()) ||
        (pos == word.size() && !end_of_word_suffix_.empty())) {
      decorated.clear();
      if (begin > 0) decorated.append(continuing_subword_prefix_);
      decorated.append(piece);
      if (pos == word.size()) decorated.append(end_of_word_suffix_);
      piece = decorated;
    }
    if (auto id = token_to_id(piece)) {
      if (pending_unk >= 0) add(pending_unk);
      pending_unk = -1;
      add(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (char c : piece) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes) {
        for (char c : piece) add(byte_ids_[static_cast<uint8_t>(c)]);
        continue;  // as Hugging Face: a pending unk stays pending
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::priority_queue<Candidate> queue;
  auto consider = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // A stale candidate: one side has been merged since it was queued.
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.alive) ids->push_back(s.id);
  }
}

}  // namespace loraserve::tokenizer
