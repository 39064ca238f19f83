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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message (or the help, or the version: those exit 0); a flag that is
    // wrong exits 2, as every other refusal of the command line does.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return exit_code;
}
