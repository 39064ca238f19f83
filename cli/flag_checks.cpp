#include "cli/flag_checks.h"

#include <cmath>
#include <exception>
#include <string>

#include "common/excerpt.h"
#include "common/status.h"

namespace loraserve::cli {

CLI::Validator finite_in(double max) {
  return CLI::Validator(
      [max](std::string& text) -> std::string {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(text, &used);
          if (used != text.size()) return "expected a number, got " + excerpt(text);
        } catch (const std::exception&) {
          return "expected a number, got " + excerpt(text);
        }
        if (!std::isfinite(v) || v < 0 || v > max)
          return fmt::format("{} is not in [0, {}]", excerpt(text), max);
        return "";
      },
      fmt::format("in [0, {}]", max));
}

}  // namespace loraserve::cli
