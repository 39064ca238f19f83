// `loraserve tokenize`: the offline tokenizer. Reads JSON lines from stdin (or --input):
// {"text": "..."} -> {"ids": [...]}, or with --decode {"ids": [...]} -> {"text": "..."}; a line
// that fails prints {"error": {"code": ..., "message": ...}} and the next line goes on.
#pragma once

#include <CLI/CLI.hpp>

namespace loraserve::cli {

// Registers the subcommand and its flags on `app`; running it is wired through the callback.
void add_tokenize_command(CLI::App& app, int* exit_code);

}  // namespace loraserve::cli
