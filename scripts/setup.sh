#!/usr/bin/env bash
# Set up arena-harness on Debian 12 (bookworm): system packages, a Docker daemon,
# then the package and its test tools in ./.venv. Safe to run again: it installs
# only what is missing. Prints one line per step; apt's and pip's output goes to
# .setup.log (shown when a step fails). Used by scripts/matrix.sh and scripts/test.sh.
#
# The package list is what a pristine Debian 12 needs for every shipped target
# and test, found by running this script in a minbase root (tests/pristine).
set -euo pipefail
cd "$(dirname "$0")/.."

LOG="$PWD/.setup.log"
: >"$LOG"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

step() { printf 'setup: %s\n' "$*" >&2; }
fail() {
    printf 'setup: FAILED: %s (last lines of %s below)\n' "$1" "$LOG" >&2
    tail -20 "$LOG" >&2
    exit 1
}

# Why each package is here:
#   python3 python3-venv          the harness and its virtualenv; guests run the Debian python3
#   user-mode-linux               the uml targets
#   qemu-system-x86 qemu-system-arm qemu-system-misc opensbi
#                                 QEMU targets (opensbi: riscv64 firmware)
#   qemu-user-static binfmt-support
#                                 qemu-user targets, and foreign-arch root filesystems
#   mmdebstrap arch-test          kernels and root filesystems; mmdebstrap only *recommends*
#                                 arch-test, which it needs for any foreign architecture
#   docker.io                     the docker targets (a daemon is started below)
#   openssh-server                the ssh tests start their own sshd
#   chromium                      renders the HTML report in a test
#   procps                        ps, for the leftover checks
#   ca-certificates               pip over TLS
#   golang-go                     Go 1.19: the go probe (probes/go), real Go beside go-modern
#   openjdk-17-jre-headless       the jvm probe on local targets and its test (tests/integration/test_jvm_probe.py)
#   linux-source-6.1 gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-riscv64-linux-gnu
#   libelf-dev bison flex bc make cpio kmod
#                                 kernels built from source (kernel: source, kernel_config:): Debian's
#                                 kernel source, the host's gcc (kbuild's own tools; the x86_64 kernel)
#                                 and the cross compilers; libelf-dev for x86's objtool. Not libssl-dev:
#                                 no module signing, and it would upgrade the host's libssl
PACKAGES="python3 python3-venv user-mode-linux qemu-system-x86 qemu-system-arm qemu-system-misc opensbi
          qemu-user-static binfmt-support mmdebstrap arch-test docker.io openssh-server chromium procps
          ca-certificates golang-go openjdk-17-jre-headless
          linux-source-6.1 gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-riscv64-linux-gnu
          libelf-dev bison flex bc make cpio kmod"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    step "installing$missing"
    $SUDO apt-get update >>"$LOG" 2>&1 || fail "apt-get update"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing >>"$LOG" 2>&1 \
        || fail "apt-get install$missing"
else
    step "system packages: all present"
fi

# A Docker daemon for the docker targets: no iptables, no bridge (containers run
# with network none). It keeps running afterwards.
if docker info >/dev/null 2>&1; then
    step "docker daemon: running"
elif [ "$(id -u)" -eq 0 ]; then
    step "starting dockerd (log: /var/log/arena-harness-dockerd.log)"
    setsid nohup dockerd --iptables=false --bridge=none >/var/log/arena-harness-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    # Not fatal: an unprivileged container cannot run a daemon, and the docker targets then skip with
    # this hint (HARNESS_REQUIRE=all, as CI sets it, turns that skip into a failure).
    docker info >/dev/null 2>&1 || step "dockerd did not start: the docker targets will skip (why: tail /var/log/arena-harness-dockerd.log)"
else
    step "no Docker daemon runs; start one (sudo dockerd) for the docker targets"
fi

if [ ! -x .venv/bin/python ]; then
    step "creating .venv"
    python3 -m venv .venv >>"$LOG" 2>&1 || fail "python3 -m venv .venv"
fi
step "installing arena-harness and its test tools into .venv"
.venv/bin/python -m pip install --disable-pip-version-check -e '.[test]' >>"$LOG" 2>&1 || fail "pip install"
step "ready"
