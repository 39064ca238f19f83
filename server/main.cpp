// loraserve: one binary, one subcommand per front end.
#include <CLI/CLI.hpp>

#include "server/generate_command.h"
#include "server/tokenize_command.h"
#ifdef LORASERVE_WITH_SERVER
#include "server/serve_command.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"loraserve: one frozen base model, many LoRA adapters, mixed in every batch"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(LORASERVE_VERSION));
  int exit_code = 0;
  loraserve::server::add_generate_command(app, &exit_code);
  loraserve::server::add_tokenize_command(app, &exit_code);
#ifdef LORASERVE_WITH_SERVER
  loraserve::server::add_serve_command(app, &exit_code);
#endif
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
