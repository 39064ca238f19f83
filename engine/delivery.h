// Delivery: what a request hears after each step that touched it, and once at its end, through
// its on_update callback (on the engine thread). With a tokenizer, the new tokens' text is
// streamed through the request's incremental detokenizer; text that may still turn into a stop
// string is held back, and a completed stop string ends the text before it. Updates carry the
// token and prompt counts and the request's queue time and time to first token.
#pragma once

#include "common/status.h"
#include "engine/request.h"
#include "engine/sequence.h"

namespace loraserve::engine {

// Detokenizes the generated tokens not yet turned into text and appends the text that is final
// to update->new_text. Returns kStop when a stop string completed (the text ends before it), or
// an error the detokenizer met; `finishing` flushes everything held back.
// REQUIRES: seq.detokenizer.
Result<FinishReason> stream_text(Sequence& seq, SequenceUpdate* update, bool finishing);

// Fills the update's ids, counts and timings and hands it to the request's callback.
void deliver(Sequence& seq, SequenceUpdate& update);

// Ends the request: flushes its text (a stop string found then makes the reason kStop, a
// detokenizer error makes it kError), marks the update finished and delivers it.
void deliver_finish(Sequence& seq, FinishReason reason, Status error, SequenceUpdate* update);

}  // namespace loraserve::engine
