// loraserve: one binary, one subcommand per front end.
#include <CLI/CLI.hpp>

#include "server/generate_command.h"

int main(int argc, char** argv) {
  CLI::App app{"loraserve: one frozen base model, many LoRA adapters, mixed in every batch"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(LORASERVE_VERSION));
  int exit_code = 0;
  loraserve::server::add_generate_command(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
