#!/usr/bin/env bash
# Installs the pinned toolchain into .toolchain/ (idempotent): Bun from the npm registry,
# Zig from PyPI's `ziglang` wheel, the test-only Prometheus parser (PyPI `prometheus-client`),
# plus the system tools the tests and demo use (iproute2; tcpdump, which reads `mcrelay capture` files).
# Then installs the locked JavaScript dependencies.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=toolchain.env
. "$root/scripts/toolchain.env"
tc="$root/.toolchain"
mkdir -p "$tc/bin"

have_version() { [ -x "$1" ] && [ "$("$1" "$2" 2>/dev/null)" = "$3" ]; }

if ! have_version "$tc/bin/bun" --version "$BUN_VERSION"; then
  echo "bootstrap: installing bun $BUN_VERSION from the npm registry" >&2
  rm -rf "$tc/bun"
  npm install --silent --no-audit --no-fund --prefix "$tc/bun" "bun@$BUN_VERSION" >&2
  ln -sf "$tc/bun/node_modules/bun/bin/bun.exe" "$tc/bin/bun"
fi
if ! have_version "$tc/bin/zig" version "$ZIG_VERSION"; then
  echo "bootstrap: installing zig $ZIG_VERSION from PyPI (ziglang)" >&2
  rm -rf "$tc/zig"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$tc/zig" "ziglang==$ZIG_VERSION" >&2
  ln -sf "$tc/zig/ziglang/zig" "$tc/bin/zig"
fi
if [ ! -d "$tc/python/prometheus_client-$PROMETHEUS_CLIENT_VERSION.dist-info" ]; then
  echo "bootstrap: installing prometheus-client $PROMETHEUS_CLIENT_VERSION from PyPI (tests parse /metrics with it)" >&2
  rm -rf "$tc/python"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$tc/python" "prometheus-client==$PROMETHEUS_CLIENT_VERSION" >&2
fi
if ! command -v ip >/dev/null 2>&1; then
  echo "bootstrap: installing iproute2" >&2
  (apt-get update -qq && apt-get install -y -qq iproute2) >&2
fi
if ! command -v tcpdump >/dev/null 2>&1; then
  echo "bootstrap: installing tcpdump (tests read mcrelay capture's pcap files with it)" >&2
  (apt-get update -qq && apt-get install -y -qq tcpdump) >&2
fi
cd "$root"
if [ ! -d node_modules ] || [ package.json -nt node_modules ] || [ bun.lock -nt node_modules ]; then
  "$tc/bin/bun" install --frozen-lockfile >&2 2>/dev/null || "$tc/bin/bun" install >&2
  touch node_modules
fi
