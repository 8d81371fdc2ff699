#!/usr/bin/env bash
# Installs what running the linux-arm64 build on an x86-64 Debian/Ubuntu host needs: user-mode
# QEMU (qemu-aarch64) and the arm64 C library (/usr/aarch64-linux-gnu). Idempotent: does
# nothing when both are present. Needs root and apt (the test suite calls it before the arm64
# tests; run it by hand elsewhere). Prints the qemu-aarch64 path and the sysroot on success.
set -euo pipefail
sysroot=/usr/aarch64-linux-gnu
have() { command -v qemu-aarch64 >/dev/null 2>&1 && [ -e "$sysroot/lib/ld-linux-aarch64.so.1" ]; }
if ! have; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "qemu-arm64-deps: apt-get not found: install qemu-user (qemu-aarch64) and an arm64 glibc in $sysroot by hand" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "qemu-arm64-deps: qemu-aarch64 or $sysroot missing, and installing them needs root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends qemu-user libc6-arm64-cross >&2 ||
    { apt-get -o DPkg::Lock::Timeout=600 update -q >&2 && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends qemu-user libc6-arm64-cross >&2; }
fi
have || { echo "qemu-arm64-deps: installed, but qemu-aarch64 or $sysroot/lib/ld-linux-aarch64.so.1 is still missing" >&2; exit 1; }
echo "$(command -v qemu-aarch64) $sysroot"
