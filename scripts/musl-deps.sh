#!/usr/bin/env bash
# Installs what running the musl builds (linux-x64-musl, linux-arm64-musl) on an x86-64 Debian
# host needs, without Alpine's package repositories (which this project's machines cannot reach):
#   - musl's dynamic loader: Debian 13's `musl` package, pinned below. Debian 12's musl 1.2.3 is
#     too old: the libraries below use DT_RELR relocations (musl >= 1.2.4) and crash it (SIGSEGV
#     in the loader before main). The x86-64 package is installed system-wide
#     (/lib/ld-musl-x86_64.so.1 is the executable's PT_INTERP, an absolute path; a musl 1.2.3
#     from Debian 12 is purged first); the arm64 one is unpacked into a QEMU_LD_PREFIX tree.
#   - libstdc++ and libgcc_s built against musl (Bun's musl runtime links libstdc++.so.6, which
#     links libgcc_s): the copies that auditwheel vendored into PyPI's pyzmq musllinux_1_2 wheels, pinned with their
#     hashes (Alpine's GCC 14 libraries, renamed libstdc++-<hash>.so.6.0.33 / libgcc_s-<hash>.so.1).
# Layout (under .toolchain/musl, idempotent: nothing is fetched when it is all there):
#   x86_64/lib       libstdc++.so.6, libgcc_s-<hash>.so.1: for LD_LIBRARY_PATH
#   aarch64/         prefix for `qemu-aarch64 -L`: lib/ld-musl-aarch64.so.1, usr/lib/libstdc++.so.6 ...
# qemu-aarch64 itself comes from scripts/qemu-arm64-deps.sh (run first here).
# Prints "<x86_64 lib dir> <aarch64 prefix> <qemu-aarch64 path>" on success. Needs root, apt and
# python3 with pip for the first install.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
MUSL_DEB_VERSION=1.2.5-3.1~deb13u1 # Debian 13 (trixie)
MUSL_SUITE=trixie
PYZMQ_VERSION=27.3.0
PYZMQ_X86_64_SHA256=d317685b83663fbd03ca8b5c34add7463e9bed094e3e1a69d2a895130b64ffaf
PYZMQ_AARCH64_SHA256=220095b4c11b0542ae5c0d67411331d3819753ee9ec0468e63a4ca6fd4ccf50f
dest="$root/.toolchain/musl"
x64lib="$dest/x86_64/lib"
a64="$dest/aarch64"
stamp="musl $MUSL_DEB_VERSION pyzmq $PYZMQ_VERSION layout 2"

die() { echo "musl-deps: $*" >&2; exit 1; }

qemu_out=$(bash "$root/scripts/qemu-arm64-deps.sh") || die "scripts/qemu-arm64-deps.sh failed"
qemu=${qemu_out%% *}

# The loader run with no arguments prints its version (and exits 1).
loader_ok() { { /lib/ld-musl-x86_64.so.1 2>&1 || true; } | grep -qx "Version ${MUSL_DEB_VERSION%%-*}"; }
tree_ok() { [ "$(cat "$dest/.stamp" 2>/dev/null)" = "$stamp" ]; }

if loader_ok && tree_ok; then
  echo "$x64lib $a64 $qemu"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "the musl loader or $dest is missing, and installing them needs root"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install musl $MUSL_DEB_VERSION and the libraries by hand (see this script)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Debian 13's musl, fetched with apt from a private package list (the host's sources stay as they are).
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $MUSL_SUITE main" >"$work/apt/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
  -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1
  -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::Translations::DefaultEnabled=false)
echo "musl-deps: fetching Debian $MUSL_SUITE's musl $MUSL_DEB_VERSION (amd64, arm64)" >&2
apt-get "${apt_opts[@]}" -q update >&2 || die "apt-get update of the $MUSL_SUITE package list failed"
(cd "$work" && apt-get "${apt_opts[@]}" -q download "musl:amd64=$MUSL_DEB_VERSION" "musl:arm64=$MUSL_DEB_VERSION" >&2) ||
  die "apt-get download musl $MUSL_DEB_VERSION failed (Debian may have replaced that version: update MUSL_DEB_VERSION)"

if ! loader_ok; then
  # Purge first: upgrading Debian 12's package in place moves /lib/... to /usr/lib/..., and
  # Debian 12's dpkg can delete the new file while removing the old path (the same file on a
  # merged-/usr system).
  if dpkg-query -W -f='${Status}' musl 2>/dev/null | grep -q installed; then
    echo "musl-deps: replacing musl $(dpkg-query -W -f='${Version}' musl) (too old: no DT_RELR)" >&2
    dpkg --purge musl >&2 || die "could not remove the installed musl (does another package depend on it?)"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    "$(ls "$work"/musl_*_amd64.deb)" >&2 || die "installing musl $MUSL_DEB_VERSION failed"
  loader_ok || die "installed musl $MUSL_DEB_VERSION, but /lib/ld-musl-x86_64.so.1 does not report that version"
fi

rm -rf "$dest"
mkdir -p "$x64lib" "$a64"
dpkg -x "$work"/musl_*_arm64.deb "$work/a64deb"
cp -a "$work/a64deb/usr" "$a64/"
ln -s usr/lib "$a64/lib" # the PT_INTERP /lib/ld-musl-aarch64.so.1, as on a merged-/usr system
[ -e "$a64/lib/ld-musl-aarch64.so.1" ] || die "the arm64 musl package has no ld-musl-aarch64.so.1"

printf 'pyzmq==%s --hash=sha256:%s --hash=sha256:%s\n' "$PYZMQ_VERSION" "$PYZMQ_X86_64_SHA256" "$PYZMQ_AARCH64_SHA256" >"$work/req.txt"
# The executable links libstdc++.so.6 (a copy of libstdc++-<hash>.so.6.0.33 is made under that
# name); libstdc++'s DT_NEEDED names libgcc_s-<hash>.so.1, which keeps its name.
extract() { # wheel dir
  python3 - "$1" "$2" <<'EOF'
import shutil, sys, zipfile
from pathlib import Path
wheel, out = sys.argv[1], Path(sys.argv[2])
found = {}
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = name.rsplit("/", 1)[-1]
        for plain, prefix in (("libstdc++.so.6", "libstdc++-"), ("libgcc_s.so.1", "libgcc_s-")):
            if name.startswith("pyzmq.libs/") and base.startswith(prefix):
                with z.open(name) as src, open(out / base, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                (out / base).chmod(0o755)
                if plain == "libstdc++.so.6":  # the name Bun links; libgcc_s keeps its hashed name
                    shutil.copy2(out / base, out / plain)
                found[plain] = base
if len(found) != 2:
    sys.exit(f"{wheel}: expected libstdc++ and libgcc_s in pyzmq.libs/, found {sorted(found.values())}")
EOF
}
for arch in x86_64 aarch64; do
  echo "musl-deps: fetching pyzmq $PYZMQ_VERSION (musllinux_1_2_$arch) from PyPI for its musl libstdc++ and libgcc_s" >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform "musllinux_1_2_$arch" --python-version 3.12 --require-hashes -r "$work/req.txt" -d "$work/wheels-$arch" >&2 ||
    die "pip download of pyzmq $PYZMQ_VERSION for musllinux_1_2_$arch failed"
  if [ "$arch" = x86_64 ]; then out=$x64lib; else out="$a64/usr/lib"; fi
  extract "$work/wheels-$arch"/*.whl "$out" || die "could not take the libraries out of the $arch wheel"
done
chmod -R a+rX "$dest" # workers run as an unprivileged user and load the same libraries
echo "$stamp" >"$dest/.stamp"
echo "$x64lib $a64 $qemu"
