#include "engine/delivery.h"

#include <chrono>

namespace loraserve::engine {
namespace {

double millis(Sequence::Clock::time_point a, Sequence::Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Whether the token that ended the request is left out of its text and its answer's tokens.
bool ending_token_hidden(const Sequence& s) {
  return s.ended_by_token && !s.request.params.include_stop_str_in_output;
}

}  // namespace

Result<FinishReason> stream_text(Sequence& s, SequenceUpdate* u, bool finishing) {
  if (s.text_stopped) return FinishReason::kStop;
  const size_t before = s.text.size();
  // The token that ended the request (EOS, a stop token id) adds no text, unless the request
  // asks for its stop in the text (vLLM's include_stop_str_in_output).
  const int32_t with_text = s.num_generated() - (ending_token_hidden(s) ? 1 : 0);
  for (; s.detokenized < with_text; ++s.detokenized) {
    const int32_t id = s.tokens[static_cast<size_t>(s.prompt_len + s.detokenized)];
    LS_ASSIGN_OR_RETURN(std::string piece, s.detokenizer->add(id));
    s.text += piece;
    s.text_ends.push_back(s.text.size());
  }
  if (finishing) {
    const size_t held = s.text.size();
    LS_ASSIGN_OR_RETURN(std::string rest, s.detokenizer->flush());
    s.text += rest;
    // What the decoder held back (half a character, say) came from the last tokens.
    for (size_t k = s.text_ends.size(); k > 0 && s.text_ends[k - 1] == held; --k)
      s.text_ends[k - 1] = s.text.size();
  }
  FinishReason reason = FinishReason::kNone;
  size_t deliverable = s.text.size();
  if (!s.stop_strings.empty()) {
    // Stop strings count once the output has more than min_tokens tokens (vLLM's rule); one
    // whose text went out before then stays in the answer.
    const StopStringMatcher::Match match =
        s.num_generated() > s.request.params.min_tokens
            ? s.stop_strings.find(s.text, before, s.text_delivered)
            : StopStringMatcher::Match{};
    if (match.found()) {
      const size_t cut = s.request.params.include_stop_str_in_output ? match.end : match.begin;
      s.text.resize(cut);
      s.text_stopped = true;
      deliverable = cut;
      reason = FinishReason::kStop;
    } else if (!finishing) {
      deliverable = s.text.size() - s.stop_strings.pending_tail(s.text);
    }
  }
  if (deliverable > s.text_delivered) {
    u->new_text += s.text.substr(s.text_delivered, deliverable - s.text_delivered);
    s.text_delivered = deliverable;
  }
  // The answer's tokens: while text may still come, those whose text is out in full; at the end,
  // every token with text before the cut (a token across it counts: part of its text is there).
  const auto& ends = s.text_ends;
  if (s.text_stopped) {
    int32_t n = 0;
    while (n < static_cast<int32_t>(ends.size()) && (n == 0 ? 0 : ends[n - 1]) < deliverable) ++n;
    s.answer_tokens = n;
  } else if (finishing) {
    s.answer_tokens = static_cast<int32_t>(ends.size());
  } else {
    while (s.answer_tokens < static_cast<int32_t>(ends.size()) &&
           ends[static_cast<size_t>(s.answer_tokens)] <= deliverable)
      ++s.answer_tokens;
  }
  return reason;
}

void deliver(Sequence& s, SequenceUpdate& u) {
  u.sequence_id = s.id;
  u.prompt_tokens = s.prompt_len;
  u.completion_tokens = s.num_generated();
  // Without a tokenizer there is no text: every token but the one that ended the request.
  u.answer_tokens = s.detokenizer
                        ? s.answer_tokens
                        : s.num_generated() - (u.finished && ending_token_hidden(s) ? 1 : 0);
  u.scheduled = s.first_scheduled_at.has_value();
  if (s.first_scheduled_at) u.queue_ms = millis(s.submitted_at, *s.first_scheduled_at);
  if (s.first_token_at) u.ttft_ms = millis(s.submitted_at, *s.first_token_at);
  if (s.request.on_update) s.request.on_update(u);
}

void deliver_finish(Sequence& s, FinishReason reason, Status error, SequenceUpdate* u) {
  if (s.detokenizer && reason != FinishReason::kError) {
    auto r = stream_text(s, u, /*finishing=*/true);
    if (!r.ok()) {
      reason = FinishReason::kError;
      error = r.status();
    } else if (*r == FinishReason::kStop) {
      reason = FinishReason::kStop;
    }
  }
  u->finished = true;
  u->finish_reason = reason;
  u->error = std::move(error);
  deliver(s, *u);
}

}  // namespace loraserve::engine
