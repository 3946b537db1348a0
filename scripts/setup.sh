#!/usr/bin/env bash
# Set up arena-harness on a Debian or Ubuntu machine: system packages, then the
# package and its test tools into ./.venv. Safe to run again: it installs only
# what is missing. Used by scripts/matrix.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# What the harness and its tests use: Python with venv; User-Mode Linux; QEMU
# for four architectures (opensbi: riscv64 firmware); mmdebstrap to fetch
# kernels and build root filesystems, with qemu-user-static and binfmt-support
# for foreign-arch ones; ps (procps) for the leftover checks.
PACKAGES="python3 python3-venv user-mode-linux qemu-system-x86 qemu-system-arm qemu-system-misc opensbi
          qemu-user-static binfmt-support mmdebstrap procps"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >&2
