#!/usr/bin/env bash
# Installs the pinned openai npm client of package-lock.json into OUT_DIR (npm ci; skipped while
# the lock file is unchanged). The HTTP integration tests' ctest fixture.
#   tests/integration/openai_client/prepare.sh OUT_DIR
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: prepare.sh OUT_DIR}"
mkdir -p "$out"
command -v node >/dev/null || { echo "prepare.sh: node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
command -v npm >/dev/null || { echo "prepare.sh: npm is not installed (apt-get install npm)" >&2; exit 1; }

if ! cmp -s "$src/package-lock.json" "$out/installed-lock.json" || [ ! -d "$out/node_modules/openai" ]; then
  cp "$src/package.json" "$src/package-lock.json" "$out/"
  (cd "$out" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$src/package-lock.json" "$out/installed-lock.json"
fi
echo "openai client in $out/node_modules"
