#!/usr/bin/env bash
# Second command of the README: every test (Zig unit tests, TypeScript unit, kernel integration
# in network namespaces, and the compiled executable). Ends with `tests: N passed, N failed`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/bootstrap.sh
export PATH="$root/.toolchain/bin:$PATH"
exec bun scripts/test.ts "$@"
