// `loraserve serve`: the gRPC server. Flags (optionally from a JSON config file; flags win),
// the shipped demo model as the default, and the signal handling that drains on SIGTERM/SIGINT.
#pragma once

#include <CLI/CLI.hpp>

namespace loraserve::cli {

// Registers the subcommand and its flags on `app`; running it is wired through the callback.
void add_serve_command(CLI::App& app, int* exit_code);

}  // namespace loraserve::cli
