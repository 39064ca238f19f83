// `loraserve generate`: the offline front end. Every JSON line of the input is one request;
// all are submitted at once to the same Engine the server uses and run in shared steps.
#pragma once

#include <CLI/CLI.hpp>

namespace loraserve::cli {

// Registers the subcommand and its flags on `app`; running it is wired through the callback.
void add_generate_command(CLI::App& app, int* exit_code);

}  // namespace loraserve::cli
