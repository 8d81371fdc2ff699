#!/usr/bin/env bash
# Installs what tests/compiled/install.test.ts runs besides mcrelay, on Debian/Ubuntu when
# missing: the shells whose completions it checks (zsh, fish) and the man page tools (groff,
# man). Idempotent; needs root and apt.
set -euo pipefail
declare -A package=([zsh]=zsh [fish]=fish [groff]=groff-base [man]=man-db)
missing=()
for cmd in "${!package[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${package[$cmd]}"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
  echo "shell-deps: ${missing[*]} missing, and installing needs root and apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >&2 ||
  { apt-get -o DPkg::Lock::Timeout=600 update -q >&2 && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >&2; }
for cmd in "${!package[@]}"; do command -v "$cmd" >/dev/null 2>&1 || { echo "shell-deps: $cmd still missing after apt-get" >&2; exit 1; }; done
