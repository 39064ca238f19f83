// Checks of flag values shared by `loraserve` and `loractl` (a small library of its own, so the
// client does not link the engine).
#pragma once

#include <CLI/CLI.hpp>

namespace loraserve::cli {

// A check for a number of GiB or seconds: finite (NaN passes CLI11's NonNegativeNumber) and in
// [0, max].
CLI::Validator finite_in(double max);

}  // namespace loraserve::cli
