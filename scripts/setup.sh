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
# for foreign-arch ones; docker.io for the docker targets; openssh-server for
# the ssh tests (they start their own sshd); chromium to check that the HTML
# report renders; ps (procps) for the leftover checks.
PACKAGES="python3 python3-venv user-mode-linux qemu-system-x86 qemu-system-arm qemu-system-misc opensbi
          qemu-user-static binfmt-support mmdebstrap docker.io openssh-server chromium procps"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
fi

# A Docker daemon for the docker targets, started as RECIPES.md says (no iptables,
# no bridge: containers run with network none). It keeps running afterwards.
if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "setup: starting dockerd (log: /var/log/arena-harness-dockerd.log)" >&2
        setsid nohup dockerd --iptables=false --bridge=none >/var/log/arena-harness-dockerd.log 2>&1 < /dev/null &
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start" >&2; tail -5 /var/log/arena-harness-dockerd.log >&2; exit 1; }
    else
        echo "setup: no Docker daemon runs; start one (sudo dockerd) for the docker targets" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >&2
