#!/usr/bin/env bash
# Installs mcrelay as a distribution package would:
#   scripts/install.sh [--binary FILE] PREFIX        (DESTDIR=/staging honoured)
# PREFIX/bin/mcrelay                                  the executable (default dist/mcrelay), NOT stripped
# PREFIX/lib/systemd/system/mcrelay.service           hardened unit (ExecStart from PREFIX/bin)
# PREFIX/lib/sysusers.d/mcrelay.conf                  users mcrelay and mcrelay-worker
# PREFIX/lib/tmpfiles.d/mcrelay.conf                  /etc/mcrelay, /run/mcrelay, /var/lib/mcrelay
# PREFIX/share/man/man1/mcrelay.1                     generated from the command definitions
# PREFIX/share/bash-completion/completions/mcrelay    (likewise)
# PREFIX/share/zsh/site-functions/_mcrelay            (likewise)
# PREFIX/share/fish/vendor_completions.d/mcrelay.fish (likewise)
# PREFIX/share/doc/mcrelay/                           README, licences, example config
# It changes nothing outside DESTDIR+PREFIX: creating the users, the directories and enabling
# the unit are left to the package's scripts (see packaging/README.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
binary="$root/dist/mcrelay"
usage() { echo "usage: scripts/install.sh [--binary FILE] PREFIX   (DESTDIR honoured)" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
    --help|-h) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "install.sh: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || usage
prefix=$1
case "$prefix" in /*) ;; *) echo "install.sh: PREFIX must be an absolute path (got '$prefix')" >&2; exit 2 ;; esac
[ -x "$binary" ] || { echo "install.sh: $binary is missing or not executable: run 'bun scripts/build.ts' first" >&2; exit 1; }
bun=$(command -v bun || true)
[ -x "$root/.toolchain/bin/bun" ] && bun="$root/.toolchain/bin/bun"
[ -n "$bun" ] || { echo "install.sh: bun is needed to generate the man page and completions (scripts/bootstrap.sh installs it)" >&2; exit 1; }

dest="${DESTDIR:-}$prefix"
generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
"$bun" "$root/scripts/gen-cli-docs.ts" "$generated" 2>/dev/null

# The executable: plain copy, never `install -s` (strip removes the appended program).
install -d "$dest/bin"
install -m 0755 "$binary" "$dest/bin/mcrelay"

install -d "$dest/lib/systemd/system" "$dest/lib/sysusers.d" "$dest/lib/tmpfiles.d"
sed "s#@BINDIR@#$prefix/bin#g" "$root/packaging/systemd/mcrelay.service" > "$dest/lib/systemd/system/mcrelay.service"
chmod 0644 "$dest/lib/systemd/system/mcrelay.service"
install -m 0644 "$root/packaging/sysusers.d/mcrelay.conf" "$dest/lib/sysusers.d/mcrelay.conf"
install -m 0644 "$root/packaging/tmpfiles.d/mcrelay.conf" "$dest/lib/tmpfiles.d/mcrelay.conf"

install -D -m 0644 "$generated/man/man1/mcrelay.1" "$dest/share/man/man1/mcrelay.1"
install -D -m 0644 "$generated/completions/bash/mcrelay" "$dest/share/bash-completion/completions/mcrelay"
install -D -m 0644 "$generated/completions/zsh/_mcrelay" "$dest/share/zsh/site-functions/_mcrelay"
install -D -m 0644 "$generated/completions/fish/mcrelay.fish" "$dest/share/fish/vendor_completions.d/mcrelay.fish"

install -d "$dest/share/doc/mcrelay/examples"
install -m 0644 "$root/README.md" "$root/LICENSE" "$root/LICENSE-MIT" "$root/LICENSE-APACHE" "$dest/share/doc/mcrelay/"
install -m 0644 "$root/packaging/mcrelay.json5" "$dest/share/doc/mcrelay/examples/mcrelay.json5"

echo "installed mcrelay into $dest" >&2
if [ -z "${DESTDIR:-}" ]; then
  cat >&2 <<HINT
next (as root): systemd-sysusers $prefix/lib/sysusers.d/mcrelay.conf && systemd-tmpfiles --create $prefix/lib/tmpfiles.d/mcrelay.conf
                cp $prefix/share/doc/mcrelay/examples/mcrelay.json5 /etc/mcrelay/ && mcrelay config check /etc/mcrelay/mcrelay.json5
                systemctl daemon-reload && systemctl enable --now mcrelay
HINT
fi
