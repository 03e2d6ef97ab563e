#!/usr/bin/env bash
# Prove kwsd works on 64-bit ARM Debian, the Raspberry Pi's OS, without a Raspberry Pi.
#
#   sudo tools/check_arm64.sh                    # Debian 12 (bookworm) and Debian 13 (trixie)
#   sudo tools/check_arm64.sh bookworm           # one release
#
# For each release it builds (once; later runs reuse it) an arm64 Debian root with debootstrap,
# runs it under qemu-user emulating a Raspberry Pi 4's CPU (Cortex-A72), copies in this
# repository's HEAD (git archive), makes a venv, `pip install .[test]` (no TensorFlow: the train
# extra is left out), runs `kwsd stream --demo` there and on this machine, and compares the two:
# the same labels in the same order, each at most one 20 ms clip stride apart (score differences
# are printed, not judged). Then it runs the fast tests that need neither mosquitto nor ALSA
# inside the root. A summary with the wall time of each phase comes last; the exit status is
# non-zero if any release's detections differ, its tests fail, or a step fails.
#
# Needs: Debian 12 or newer on x86_64 (or any non-arm64 host qemu-user-static can emulate from),
# root (debootstrap, chroot, mounts), binfmt_misc, and network to the Debian mirror and to PyPI.
# It installs debootstrap, qemu-user-static, binfmt-support and python3-venv with apt when they
# are missing. Disk: about 0.7 GB per release under the cache folder.
#
# Cache folder: $KWSD_ARM64_CACHE (default /var/tmp/kwsd-arm64): the roots, the host's venv and
# every log. Delete it to start from scratch. Mirror: $KWSD_ARM64_MIRROR (default
# http://deb.debian.org/debian). Set KWSD_ARM64_TESTS=0 to skip the tests.
#
# Takes (2 cores, one busy with other work; measured 2026-12-07): about 21 minutes from scratch
# for both releases (about 11 per release, 6-7 of them debootstrap's emulated second stage) and
# about 4.5 minutes once the roots are built (pip about 40 s, the demo 15 s, the tests 70 s each).
#
# Not run by CI or pytest: it needs root, the network and minutes of CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
SCRIPT="$REPO/tools/check_arm64.sh"

CACHE="${KWSD_ARM64_CACHE:-/var/tmp/kwsd-arm64}"
MIRROR="${KWSD_ARM64_MIRROR:-http://deb.debian.org/debian}"
RUN_TESTS="${KWSD_ARM64_TESTS:-1}"
# Qemu's `max` CPU gives wrong int8 scores with ai-edge-litert; a Pi 4's core gives the right ones.
GUEST_CPU="cortex-a72"
# The demo bundle's clip stride: two runtimes may cross the threshold one window apart.
STRIDE_MS=20
# Fast tests with no broker and no sound device (the demo through the real interpreter included).
TESTS=(tests/test_frontend.py tests/test_smoother.py tests/test_bundle.py tests/test_ringbuffer.py
  tests/test_pipeline.py)
GUEST_SRC=/opt/kwsd-src
GUEST_VENV=/opt/kwsd-venv
SUPPORTED_SUITES="bookworm trixie"

if [ "$(id -u)" -ne 0 ]; then
  echo "check_arm64.sh: needs root (debootstrap, chroot and mounts); run it with sudo" >&2
  exit 2
fi

# ---- phases: each one timed and recorded in $SUMMARY; a failing step ends the process, and the
# EXIT trap records which phase it was.
SUMMARY=""
PHASE=""
PHASE_STARTED=0
phase() {  # phase NAME COMMAND...
  PHASE="$1"
  PHASE_STARTED=$SECONDS
  shift
  echo "== $PHASE"
  "$@"
  echo "  $PHASE: ok ($((SECONDS - PHASE_STARTED)) s)" >>"$SUMMARY"
  PHASE=""
}
note() { echo "  $*" | tee -a "$SUMMARY"; }
logged() {  # logged LOG COMMAND...: output to LOG; on failure show its end
  local log="$1" status=0
  shift
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    echo "-- failed (exit $status): $*; last lines of $log:"
    tail -n 25 "$log"
    return "$status"
  fi
}

# ---- one release, in a process of its own (so its mounts and its failure stay its own) -------
MOUNTS=()
unmount_under() {  # every mount at or below $1, deepest first
  local target
  awk -v root="$1" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/self/mounts |
    sort -r | while read -r target; do umount "$target" 2>/dev/null || umount -l "$target"; done
}
suite_exit() {
  local status=$?
  if [ -n "$PHASE" ]; then
    echo "  $PHASE: FAILED ($((SECONDS - PHASE_STARTED)) s)" >>"$SUMMARY"
  fi
  [ -n "${ROOT:-}" ] && unmount_under "$ROOT"
  exit "$status"
}

in_root() {  # in_root COMMAND...: run in the arm64 root with a clean environment
  local env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
    LANG=C.UTF-8 QEMU_CPU="$GUEST_CPU" PIP_CERT=/etc/ssl/certs/kwsd-host-ca.crt
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180)
  local proxy
  for proxy in http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY; do
    if [ -n "${!proxy:-}" ]; then env+=("$proxy=${!proxy}"); fi
  done
  env -i "${env[@]}" chroot "$ROOT" "$@"
}

build_root() {
  if [ -e "$ROOT/.kwsd-root-complete" ]; then
    note "root: reused $ROOT (built $(cat "$ROOT/.kwsd-root-complete"))"
    return
  fi
  unmount_under "$ROOT"
  if awk -v root="$ROOT" 'index($2, root) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    echo "something is still mounted under $ROOT; not deleting it" >&2
    return 1
  fi
  rm -rf "$ROOT"
  # --foreign unpacks without running anything; the second stage runs the arm64 maintainer
  # scripts under qemu. minbase: no apt-utils, no man pages, nothing a venv does not need.
  logged "$DIR/debootstrap-1.log" debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates "$SUITE" "$ROOT" "$MIRROR"
  copy_interpreter
  logged "$DIR/debootstrap-2.log" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin QEMU_CPU="$GUEST_CPU" \
    chroot "$ROOT" /debootstrap/debootstrap --second-stage
  date -u +%Y-%m-%dT%H:%MZ >"$ROOT/.kwsd-root-complete"
  note "root: built $ROOT ($(du -sh --exclude=proc "$ROOT" | cut -f1))"
}

copy_interpreter() {
  # With binfmt's F flag (Debian's default) the kernel already holds qemu open; without it,
  # the interpreter must exist at the same path inside the root.
  local interpreter
  interpreter="$(awk '/^interpreter/ { print $2 }' /proc/sys/fs/binfmt_misc/qemu-aarch64)"
  if ! grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    mkdir -p "$ROOT$(dirname "$interpreter")"
    cp -L "$interpreter" "$ROOT$interpreter"
  fi
}

mount_root() {
  unmount_under "$ROOT"
  copy_interpreter
  mount -t proc proc "$ROOT/proc"
  # Debian 12's qemu (7.2) shows the guest the host's x86 /proc/cpuinfo, and ai-edge-litert's CPU
  # detection then crashes in Interpreter(): give it what a Raspberry Pi 4 shows instead.
  write_pi_cpuinfo >"$DIR/cpuinfo"
  mount --bind "$DIR/cpuinfo" "$ROOT/proc/cpuinfo"
  mount -t sysfs -o ro sysfs "$ROOT/sys"
  mount --bind /dev "$ROOT/dev"
  mount -t tmpfs tmpfs "$ROOT/tmp"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # The host's CA list: pip must trust whatever the host trusts (a proxy's CA included).
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/kwsd-host-ca.crt"
  note "guest: $(in_root uname -m), $(in_root python3 --version), QEMU_CPU=$GUEST_CPU," \
    "CPU features the guest sees: $(guest_hwcaps)"
}

guest_hwcaps() {  # the emulated CPU's AT_HWCAP as names (a Cortex-A72 has no LSE atomics)
  local hwcap bit names=(fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid) out=""
  hwcap="$(in_root env LD_SHOW_AUXV=1 /bin/true | awk '/AT_HWCAP:/ { print $2 }')"
  for bit in "${!names[@]}"; do
    if (((0x$hwcap >> bit) & 1)); then out="$out ${names[bit]}"; fi
  done
  echo "${out# } (AT_HWCAP 0x$hwcap)"
}

write_pi_cpuinfo() {  # a Raspberry Pi 4's /proc/cpuinfo, one entry per host CPU
  local cpu
  for ((cpu = 0; cpu < $(nproc); cpu++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$cpu"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n'
    printf 'CPU revision\t: 3\n\n'
  done
  printf 'Hardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 0000000000000000\n'
  printf 'Model\t\t: Raspberry Pi 4 Model B Rev 1.1\n'
}

install_kwsd() {
  rm -rf "$ROOT$GUEST_SRC"
  mkdir -p "$ROOT$GUEST_SRC"
  tar -xf "$CACHE/src.tar" -C "$ROOT$GUEST_SRC"
  if [ ! -x "$ROOT$GUEST_VENV/bin/python" ]; then
    logged "$DIR/venv.log" in_root python3 -m venv "$GUEST_VENV"
  fi
  # The test extra too (pytest, ruff, mypy...): no TensorFlow anywhere. pip reinstalls kwsd
  # itself from the fresh copy every time; the dependencies stay from the last run.
  # --no-compile: byte-compiling all of scipy and mypy under emulation takes minutes; Python
  # compiles what the demo and the tests import when they first import it.
  logged "$DIR/pip.log" in_root "$GUEST_VENV/bin/pip" install --no-compile "$GUEST_SRC[test]"
  note "guest packages: $(in_root "$GUEST_VENV/bin/pip" list --format=freeze 2>/dev/null |
    grep -iE '^(kwsd|ai-edge-litert|numpy|scipy|soxr)==' | tr '\n' ' ')"
}

guest_demo() {
  in_root "$GUEST_VENV/bin/kwsd" stream --demo >"$DIR/demo.jsonl" 2>"$DIR/demo.err" || {
    local status=$?
    echo "-- kwsd stream --demo failed in the arm64 root (exit $status):"
    tail -n 25 "$DIR/demo.err"
    return "$status"
  }
}

compare_demo() {  # the arm64 detections against the host's
  python3 - "$CACHE/host-demo.jsonl" "$DIR/demo.jsonl" "$STRIDE_MS" <<'PY' | tee -a "$SUMMARY"
import itertools, json, sys

host, guest = ([json.loads(line) for line in open(path) if line.strip()] for path in sys.argv[1:3])
stride_ms = int(sys.argv[3])
same = bool(host) and len(host) == len(guest)
print(f"  demo: x86_64 {len(host)} detections, arm64 {len(guest)}")
for h, g in itertools.zip_longest(host, guest):
    show = lambda d: f"{d['label']:>9} {d['audio_time_ms']:>6} ms {d['score']:.5f}" if d else f"{'-':>29}"
    verdict = "MISSING"
    if h and g:
        dt_ms, dscore = g["audio_time_ms"] - h["audio_time_ms"], g["score"] - h["score"]
        ok = h["label"] == g["label"] and abs(dt_ms) <= stride_ms
        verdict = f"{'same' if ok else 'DIFFERENT'} (time {dt_ms:+d} ms, score {dscore:+.5f})"
        same = same and ok
    print(f"    x86_64 {show(h)} | arm64 {show(g)}  {verdict}")
print(f"  demo: {'the same detections' if same else 'DIFFERENT detections'}"
      f" (required: the same labels in the same order, each within {stride_ms} ms)")
sys.exit(0 if same else 1)
PY
}

guest_tests() {
  local status=0
  in_root sh -c "cd $GUEST_SRC && exec $GUEST_VENV/bin/python -m pytest -q -p no:cacheprovider \
    -m 'not slow' ${TESTS[*]}" >"$DIR/pytest.log" 2>&1 || status=$?
  note "tests (${TESTS[*]}): $(tail -n 1 "$DIR/pytest.log")"
  if [ "$status" -ne 0 ]; then
    grep -E '^(FAILED|ERROR)' "$DIR/pytest.log" | head -n 20 || true
    return "$status"
  fi
}

check_suite() {
  SUITE="$1"
  DIR="$CACHE/$SUITE"
  ROOT="$DIR/root"
  SUMMARY="$DIR/summary"
  mkdir -p "$DIR"
  : >"$SUMMARY"
  trap suite_exit EXIT
  trap 'exit 130' INT TERM
  phase "$SUITE: arm64 root" build_root
  phase "$SUITE: mounts" mount_root
  phase "$SUITE: venv + pip install .[test]" install_kwsd
  phase "$SUITE: kwsd stream --demo" guest_demo
  phase "$SUITE: compare with x86_64" compare_demo
  if [ "$RUN_TESTS" != "0" ]; then
    phase "$SUITE: pytest -m 'not slow' (fast subset)" guest_tests
  fi
}

if [ "${1:-}" = "--one-suite" ]; then
  check_suite "$2"
  exit 0
fi

# ---- the host side, then each release --------------------------------------------------------
SUITES=("$@")
if [ "${#SUITES[@]}" -eq 0 ]; then SUITES=(bookworm trixie); fi
for suite in "${SUITES[@]}"; do
  case " $SUPPORTED_SUITES " in
    *" $suite "*) ;;
    *) echo "check_arm64.sh: unknown release '$suite' (expected: $SUPPORTED_SUITES)" >&2; exit 2 ;;
  esac
done
mkdir -p "$CACHE"
SUMMARY="$CACHE/summary-host"
: >"$SUMMARY"
host_exit() {
  local status=$?
  if [ -n "$PHASE" ]; then echo "  $PHASE: FAILED ($((SECONDS - PHASE_STARTED)) s)" >>"$SUMMARY"; fi
  exit "$status"
}
trap host_exit EXIT

host_tools() {
  local missing="" pkg
  for pkg in debootstrap qemu-user-static binfmt-support python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    logged "$CACHE/apt.log" apt-get update
    logged "$CACHE/apt.log" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
      --no-install-recommends $missing
  fi
  if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  update-binfmts --enable qemu-aarch64 2>/dev/null || true
  if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    echo "qemu-aarch64 is not registered with binfmt_misc (update-binfmts --display qemu-aarch64)" >&2
    return 1
  fi
  note "host: $(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME"), $(qemu-aarch64-static --version | head -n 1)"
}

source_tree() {
  if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$REPO" archive --format=tar -o "$CACHE/src.tar" HEAD
    note "source: git archive of HEAD $(git -C "$REPO" rev-parse --short HEAD)$(
      [ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] || echo " (uncommitted changes are NOT checked)")"
  else
    tar -cf "$CACHE/src.tar" --exclude=.git --exclude='.venv*' --exclude=build --exclude='*.egg-info' \
      --exclude=__pycache__ -C "$REPO" .
    note "source: $REPO (not a git checkout: the working tree)"
  fi
}

host_demo() {
  local venv="$CACHE/host-venv" src="$CACHE/host-src"
  rm -rf "$src"
  mkdir -p "$src"
  tar -xf "$CACHE/src.tar" -C "$src"
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
  logged "$CACHE/host-pip.log" "$venv/bin/pip" install "$src"
  "$venv/bin/kwsd" stream --demo >"$CACHE/host-demo.jsonl"
  note "host demo: $(wc -l <"$CACHE/host-demo.jsonl") detections ($("$venv/bin/python" --version))"
}

STARTED=$SECONDS
phase "host: apt packages + binfmt" host_tools
phase "host: source" source_tree
phase "host: kwsd stream --demo (x86_64)" host_demo
RESULTS=()
for suite in "${SUITES[@]}"; do
  status=0
  bash "$SCRIPT" --one-suite "$suite" || status=$?
  if [ "$status" -eq 0 ]; then RESULTS+=("$suite: PASSED"); else RESULTS+=("$suite: FAILED (exit $status)"); fi
done

echo
echo "==== summary (cache: $CACHE)"
cat "$SUMMARY"
for suite in "${SUITES[@]}"; do
  echo "-- $suite"
  cat "$CACHE/$suite/summary" 2>/dev/null || true
done
echo "--"
printf '%s\n' "${RESULTS[@]}"
echo "total: $((SECONDS - STARTED)) s"
case " ${RESULTS[*]} " in *FAILED*) exit 1 ;; esac
exit 0
