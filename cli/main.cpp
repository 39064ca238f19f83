// loraserve: one binary, one subcommand per front end.
#include <CLI/CLI.hpp>

#include "cli/generate_command.h"
#include "cli/tokenize_command.h"
#ifdef LORASERVE_WITH_SERVER
#include "cli/serve_command.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"loraserve: one frozen base model, many LoRA adapters, mixed in every batch"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(LORASERVE_VERSION));
  int exit_code = 0;
  loraserve::cli::add_generate_command(app, &exit_code);
  loraserve::cli::add_tokenize_command(app, &exit_code);
#ifdef LORASERVE_WITH_SERVER
  loraserve::cli::add_serve_command(app, &exit_code);
#endif
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
