#!/usr/bin/env bash
# First command of the README: install the pinned toolchain, build dist/mcrelay, and relay a
# multicast stream across throwaway network namespaces (needs root).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/bootstrap.sh
export PATH="$root/.toolchain/bin:$PATH"
bun scripts/build.ts
bun scripts/demo.ts
