#!/usr/bin/env bash
# Runs systemd/kwsd.service under a real systemd: a Debian 12 container booted with
# systemd-nspawn, kwsd installed in it as README.md "Running as a service" says, capturing
# from an ALSA device backed by a FIFO that a feeder fills with kwsd/demo/demo.wav in real
# time, and publishing to the container's own mosquitto. Checks, with a PASS/FAIL line each:
#   start     `systemctl enable --now kwsd` returns with the unit active (Type=notify:
#             READY=1 once audio flows); the time it took
#   mqtt      a detection arrives on kwsd/check/detection, and status is `online`
#   reload    `systemctl reload kwsd` (ExecReload: SIGHUP from kwsd's venv Python) applies
#             a new threshold, same main PID, as the journal says
#   watchdog  the feeder stopped (the FIFO stays open, nobody writes): WATCHDOG=1 stops,
#             systemd's watchdog (WatchdogSec=10) ends kwsd, Restart=on-failure starts it
#             again, and it becomes active once audio flows again
#   nostart   a broken config: the unit ends failed with status 78 and is not restarted
#             (RestartPreventExitStatus)
# and prints `systemd-analyze security kwsd.service` from inside the container.
#
# Needs: root on a Debian 12 (or similar) x86_64/arm64 host, the Debian mirror and PyPI
# reachable; installs debootstrap and systemd-container with apt-get when missing. The host
# need not run systemd: without it the container is booted with --register=no --keep-unit.
# Commands go into the container with nsenter (util-linux), which works with or without
# systemd-machined on the host; `systemctl -M kwsd-check` works too where machined runs.
#
# Cache: KWSD_NSPAWN_CACHE (default /var/tmp/kwsd-nspawn) keeps the debootstrap root
# (base/, about 310 MB, rebuilt when the package list changes), pip's cache, the working
# copy of the root (machine/, remade at every run) and the last run's logs (last-run/).
# Run time (2026-12-07, a 2-core VM without systemd as PID 1): about 4 min the first time
# (debootstrap 2.5 min, pip's downloads), 1 min 15 s to 2 min 5 s from the cache (copying the
# cached root 10-40 s, depending on the disk; install 25-40 s; the checks 42 s, of which the
# watchdog check waits about 22 s). Not run by .ci/run or pytest.
#
# Usage: sudo tools/check_systemd.sh        exit 0 when every check passes, 1 otherwise
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${KWSD_NSPAWN_CACHE:-/var/tmp/kwsd-nspawn}
MIRROR=${KWSD_NSPAWN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
MACHINE=kwsd-check
# libportaudio2: sounddevice's PortAudio (its Linux wheel does not carry one). netbase: /etc/hosts,
# without which "localhost" does not resolve (minbase leaves it out; every real install has it).
PACKAGES=systemd,systemd-sysv,dbus,netbase,python3,python3-venv,mosquitto,mosquitto-clients,libportaudio2,ca-certificates
BASE=$CACHE/base
ROOT=$CACHE/machine
LOGS=$CACHE/last-run
TOPIC=kwsd/check
PATH_IN=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

now_ms() { date +%s%3N; }
secs() { printf '%d.%01d' $(($1 / 1000)) $(($1 % 1000 / 100)); }  # ms -> "12.3"
say() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { say "ERROR: $*" >&2; exit 2; }

[[ $(id -u) == 0 ]] || die "run as root (debootstrap, systemd-nspawn and nsenter need it)"
START_MS=$(now_ms)
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock -n 9 || die "another check_systemd.sh holds $CACHE/lock"

# ---------------------------------------------------------------------------------------
# 1. Host tools

T=$(now_ms)
missing=()
for pkg in debootstrap systemd-container; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    apt-get -q update
    DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 install "${missing[@]}"
fi
HOST_TOOLS_MS=$(($(now_ms) - T))

# ---------------------------------------------------------------------------------------
# 2. The Debian root, built once

T=$(now_ms)
if [[ $(cat "$BASE/.kwsd-base" 2>/dev/null) != "$SUITE $PACKAGES" ]]; then
    say "debootstrap $SUITE into $BASE (a few minutes)"
    rm -rf "$BASE" "$BASE.tmp"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$BASE.tmp" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed; see $CACHE/debootstrap.log"
    echo "$SUITE $PACKAGES" >"$BASE.tmp/.kwsd-base"
    mv "$BASE.tmp" "$BASE"
fi
BASE_MS=$(($(now_ms) - T))

if pid=$(pgrep -f -- "--machine=$MACHINE( |$)"); then
    die "a $MACHINE container is still running (process $pid); stop it first"
fi
T=$(now_ms)
rm -rf "$ROOT" "$LOGS"
mkdir -p "$LOGS" "$CACHE/pip"
cp -a --reflink=auto "$BASE" "$ROOT"
COPY_MS=$(($(now_ms) - T))

# ---------------------------------------------------------------------------------------
# 3. kwsd installed as README.md "Running as a service" says, plus the check's own parts

T=$(now_ms)
mkdir -p "$ROOT/root/kwsd-src" "$ROOT/etc/kwsd-check" "$ROOT/etc/systemd/system/kwsd.service.d"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    # The tracked files as they are in the working tree (no .venv, no build/).
    git -C "$REPO" ls-files -z | tar -C "$REPO" --null -T - -cf - | tar -C "$ROOT/root/kwsd-src" -xf -
else
    tar -C "$REPO" --exclude=.venv --exclude=build --exclude='*.egg-info' -cf - . | tar -C "$ROOT/root/kwsd-src" -xf -
fi
echo "$MACHINE" >"$ROOT/etc/hostname"

# The config installed in /etc/kwsd: the demo model on the FIFO device, the local broker.
cat >"$ROOT/etc/kwsd-check/config.yaml" <<'EOF'
# tools/check_systemd.sh: the demo model, the FIFO-backed ALSA device, the container's broker.
audio:
  device: kwsdcheck
detection:
  threshold: 0.9
mqtt:
  host: localhost
  device_id: check
EOF
# An ALSA capture device reading raw 16 kHz mono S16_LE from a FIFO (tools/kwsd_tools/harness/alsa.py file_pcm).
cat >"$ROOT/etc/kwsd-check/asound.conf" <<'EOF'
pcm.kwsdcheck {
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "/run/kwsd-check/mic.fifo"
    format "raw"
    hint { show on; description "kwsd check capture (FIFO)" }
}
EOF
# For the check only: kwsd's own unit file is installed unchanged.
cat >"$ROOT/etc/systemd/system/kwsd.service.d/check-audio.conf" <<'EOF'
[Service]
Environment=ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:/etc/kwsd-check/asound.conf
EOF
cat >"$ROOT/etc/kwsd-check/feed.py" <<'EOF'
"""Fill the check's FIFO in real time, like a microphone: silence until SIGUSR1, then
demo.wav and 1 s of silence, over and over. The FIFO is held open read-write, so kwsd can
open the device before anything is written and never sees end-of-file; SIGSTOP makes a
microphone that delivers nothing. Chunks are one 20 ms capture block (audio.block_ms): the
ALSA file plugin reads the FIFO once per block (tools/kwsd_tools/harness/alsa.py PacedFifoWriter)."""
import os, signal, stat, sys, time, wave

fifo, wav = sys.argv[1], sys.argv[2]
RATE_HZ, CHUNK_BYTES = 16000, 320 * 2
with wave.open(wav) as w:
    assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE_HZ)
    demo = w.readframes(w.getnframes()) + bytes(RATE_HZ * 2)
    demo += bytes(-len(demo) % CHUNK_BYTES)
silence = bytes(CHUNK_BYTES)
playing = False

def play(signum, frame):
    global playing
    playing = True

signal.signal(signal.SIGUSR1, play)
if not (os.path.exists(fifo) and stat.S_ISFIFO(os.stat(fifo).st_mode)):
    os.mkfifo(fifo)
os.chmod(fifo, 0o644)
fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
chunk_s = CHUNK_BYTES / 2 / RATE_HZ
start, n, offset = time.monotonic(), 0, 0
while True:
    late = time.monotonic() - (start + n * chunk_s)
    if late > 0.5:  # stopped for a while (SIGSTOP): carry on from now, no burst
        start, n, late = time.monotonic(), 0, 0.0
    if late < 0:
        time.sleep(-late)
    if playing:
        chunk = demo[offset : offset + CHUNK_BYTES]
        offset = (offset + CHUNK_BYTES) % len(demo)
    else:
        chunk = silence
    try:
        os.write(fd, chunk)
    except BlockingIOError:  # nobody reading and the pipe full: the chunk is lost, as live
        pass
    n += 1
EOF
cat >"$ROOT/etc/systemd/system/kwsd-check-feed.service" <<'EOF'
[Unit]
Description=tools/check_systemd.sh: demo.wav into /run/kwsd-check/mic.fifo in real time
[Service]
RuntimeDirectory=kwsd-check
RuntimeDirectoryMode=0755
ExecStart=/usr/bin/python3 /etc/kwsd-check/feed.py /run/kwsd-check/mic.fifo /root/kwsd-src/kwsd/demo/demo.wav
EOF

# pip trusts what the host trusts: behind a TLS-inspecting proxy (as on the machine this was
# written on) the container's own CA list would refuse PyPI.
pip_cert=()
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/kwsd-check/host-ca.crt"
    pip_cert=(--setenv=PIP_CERT=/etc/kwsd-check/host-ca.crt)
fi
say "installing kwsd into the container (python3 -m venv, pip install .)"
# Not booted yet: a plain nspawn with the host's network, for pip; pip's cache outlives runs.
# shellcheck disable=SC2016 # $rc is the container shell's
systemd-nspawn -q -D "$ROOT" --register=no --keep-unit --pipe \
    --bind="$CACHE/pip:/root/.cache/pip" --setenv=PATH="$PATH_IN" "${pip_cert[@]}" \
    /bin/sh -euxc '
        cd /root/kwsd-src
        useradd --system --no-create-home --shell /usr/sbin/nologin --groups audio kwsd
        python3 -m venv /opt/kwsd/venv && /opt/kwsd/venv/bin/pip install --progress-bar off -q .
        install -d /etc/kwsd && install -m 0640 -o root -g kwsd /etc/kwsd-check/config.yaml /etc/kwsd/config.yaml
        rc=0; /opt/kwsd/venv/bin/kwsd check-config /etc/kwsd/config.yaml || rc=$?
        echo "$rc" >/etc/kwsd-check/check-config.rc
        install -m 0644 systemd/kwsd.service /etc/systemd/system/kwsd.service
        /opt/kwsd/venv/bin/pip list --format=freeze' >"$LOGS/install.log" 2>&1 ||
    { tail -30 "$LOGS/install.log"; die "installing kwsd failed; see $LOGS/install.log"; }
INSTALL_MS=$(($(now_ms) - T))

# ---------------------------------------------------------------------------------------
# 4. Boot

NSPAWN_PID='' LEADER='' SUB_PID=''
cleanup() {
    local rc=$?
    [[ -n $SUB_PID ]] && kill "$SUB_PID" 2>/dev/null
    if [[ -n $LEADER ]] && kill -0 "$LEADER" 2>/dev/null; then
        ct journalctl --no-pager -b -o short-monotonic >"$LOGS/journal.txt" 2>&1 || true
        ct systemctl poweroff --no-block >/dev/null 2>&1 || true
    fi
    if [[ -n $NSPAWN_PID ]]; then
        for _ in $(seq 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$NSPAWN_PID" 2>/dev/null; then
            kill -TERM "$NSPAWN_PID" 2>/dev/null || true
            sleep 2
            kill -KILL "$NSPAWN_PID" 2>/dev/null || true
        fi
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A command inside the container, as root, with a clean environment.
ct() {
    nsenter --target "$LEADER" --all -- \
        env -i PATH="$PATH_IN" LANG=C.UTF-8 SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat "$@"
}
prop() { ct systemctl show -P "$2" "$1"; }
wait_for() {  # timeout_s command...: poll until the command succeeds
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    until "$@"; do
        (($(now_ms) < deadline)) || return 1
        sleep 0.2
    done
}

T=$(now_ms)
register=()
if [[ ! -d /run/systemd/system ]]; then
    # No systemd on the host (a container or a bare VM): nothing to register the machine
    # with, and no scope to create, so the container stays in this process's cgroup.
    register=(--register=no --keep-unit)
fi
say "booting the container (systemd-nspawn --boot, private network)"
systemd-nspawn -q -D "$ROOT" --machine="$MACHINE" --boot --private-network "${register[@]}" \
    </dev/null >"$LOGS/console.log" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 100); do
    for child in $(pgrep -P "$NSPAWN_PID" || true); do
        [[ $(awk '/^NSpid:/ {print $NF}' "/proc/$child/status" 2>/dev/null) == 1 ]] && LEADER=$child
    done
    [[ -n $LEADER ]] && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$LOGS/console.log"; die "systemd-nspawn exited"; }
    sleep 0.2
done
[[ -n $LEADER ]] || { cat "$LOGS/console.log"; die "no container init process after 20 s"; }
# systemctl needs the manager's socket, which exists only once systemd is under way.
wait_for 30 ct test -S /run/systemd/private || { cat "$LOGS/console.log"; die "no systemd in the container after 30 s"; }
state=$(ct timeout 60 systemctl is-system-running --wait 2>&1 || true)
BOOT_MS=$(($(now_ms) - T))
say "container up in $(secs "$BOOT_MS") s: $state (init is host process $LEADER)"
ct systemctl --failed --no-legend --plain >"$LOGS/failed-at-boot.txt" 2>&1 || true

# ---------------------------------------------------------------------------------------
# 5. Checks

declare -a RESULTS=()
FAILED=0
result() {  # name PASS|FAIL detail
    RESULTS+=("$(printf '%-4s %-9s %s' "$2" "$1" "$3")")
    say "$2 $1: $3"
    [[ $2 == PASS ]] || FAILED=1
}
journal_has() { ct journalctl -u kwsd --no-pager -o cat | grep -qE "$1"; }
is_active() { [[ $(prop kwsd ActiveState) == active ]]; }
restarted() { (($(prop kwsd NRestarts) > restarts_before)); }

CHECKS_MS=$(now_ms)
# (a) start: `systemctl enable --now` waits for READY=1, which kwsd sends once audio flows.
ct systemctl start kwsd-check-feed
wait_for 10 ct test -p /run/kwsd-check/mic.fifo || die "the feeder made no FIFO"
ct timeout 150 mosquitto_sub -h localhost -t "$TOPIC/detection" -C 1 -W 140 >"$LOGS/detection.json" 2>&1 &
SUB_PID=$!
sleep 0.5
T=$(now_ms)
ct systemctl daemon-reload
ct timeout 90 systemctl enable --now kwsd >"$LOGS/enable.txt" 2>&1 && rc=0 || rc=$?
START_S_MS=$(($(now_ms) - T))
active=$(prop kwsd ActiveState)
exec_ts=$(prop kwsd ExecMainStartTimestampMonotonic)
active_ts=$(prop kwsd ActiveEnterTimestampMonotonic)
if [[ $rc == 0 && $active == active ]]; then
    result start PASS "active $(secs "$START_S_MS") s after \`systemctl enable --now kwsd\` ($(secs $(((${active_ts:-0} - ${exec_ts:-0}) / 1000))) s from exec to READY=1)"
else
    result start FAIL "systemctl exit $rc, ActiveState=$active after $(secs "$START_S_MS") s"
fi

# README step 4, `kwsd check-config /etc/kwsd/config.yaml`, as run before the first start
# (during the install above), and again now that the service has run.
cc_before=$(cat "$ROOT/etc/kwsd-check/check-config.rc")
cc_said=$(grep '^kwsd: error' "$LOGS/install.log" | head -1 || true)
cc_now=0
ct /opt/kwsd/venv/bin/kwsd check-config /etc/kwsd/config.yaml >"$LOGS/check-config.txt" 2>&1 || cc_now=$?
if [[ $cc_before == 0 && $cc_now == 0 ]]; then
    result checkcfg PASS "kwsd check-config exit 0 before the first start and after it"
else
    result checkcfg FAIL "kwsd check-config exit $cc_before before the first start (${cc_said:-no message}), exit $cc_now after it"
fi

# (b) a detection over MQTT: the feeder starts demo.wav now (its first word "yes" ends at 2.2 s).
T=$(now_ms)
ct systemctl kill -s SIGUSR1 --kill-who=main kwsd-check-feed
if wait_for 60 bash -c "! kill -0 $SUB_PID 2>/dev/null" && grep -q '"label"' "$LOGS/detection.json"; then
    MQTT_MS=$(($(now_ms) - T))
    status=$(ct timeout 10 mosquitto_sub -h localhost -t "$TOPIC/status" -C 1 -W 5 2>&1 || true)
    label=$(grep -o '"label": *"[^"]*"' "$LOGS/detection.json" | head -1)
    if [[ $status == online ]]; then
        result mqtt PASS "$label on $TOPIC/detection $(secs "$MQTT_MS") s after the demo audio began; status online"
    else
        result mqtt FAIL "a detection came, but $TOPIC/status is '$status'"
    fi
else
    result mqtt FAIL "no detection on $TOPIC/detection in 60 s: $(head -c 300 "$LOGS/detection.json")"
fi
SUB_PID=''

# (c) reload: a new threshold, applied in place.
pid_before=$(prop kwsd MainPID)
ct sed -i 's/^  threshold: 0.9$/  threshold: 0.85/' /etc/kwsd/config.yaml
T=$(now_ms)
if ct systemctl reload kwsd && wait_for 15 journal_has 'reload: /etc/kwsd/config.yaml applied .*threshold 0\.850'; then
    RELOAD_MS=$(($(now_ms) - T))
    if [[ $(prop kwsd MainPID) == "$pid_before" && $(prop kwsd ActiveState) == active ]]; then
        result reload PASS "journal: \"$(ct journalctl -u kwsd --no-pager -o cat | grep -E 'reload: .* applied' | tail -1)\" in $(secs "$RELOAD_MS") s, same PID $pid_before"
    else
        result reload FAIL "applied, but MainPID $pid_before -> $(prop kwsd MainPID), $(prop kwsd ActiveState)"
    fi
else
    result reload FAIL "no 'reload: ... applied' with threshold 0.850 in the journal in 15 s"
fi

# (d) watchdog: the microphone goes quiet (the feeder stopped, the FIFO open, nothing written).
restarts_before=$(prop kwsd NRestarts)
T=$(now_ms)
ct systemctl kill -s SIGSTOP kwsd-check-feed
if wait_for 40 journal_has 'Watchdog timeout'; then
    WD_MS=$(($(now_ms) - T))
    if wait_for 40 restarted; then
        RESTART_MS=$(($(now_ms) - T))
        ct systemctl kill -s SIGCONT kwsd-check-feed
        # How the old process ended: SIGTERM handled, its own exit 75 (a hung device close)
        # or SIGKILL after TimeoutStopSec.
        ended=$(ct journalctl -u kwsd --no-pager -o cat | grep -o 'Main process exited, .*' | tail -1 || true)
        if wait_for 60 is_active && journal_has "Failed with result 'watchdog'"; then
            BACK_MS=$(($(now_ms) - T))
            result watchdog PASS "audio stopped -> watchdog timeout after $(secs "$WD_MS") s (${ended#Main process exited, }, result 'watchdog'), restarted after $(secs "$RESTART_MS") s (NRestarts $restarts_before -> $(prop kwsd NRestarts)), feeder resumed then, active again at $(secs "$BACK_MS") s"
        else
            result watchdog FAIL "restarted, but not active again 60 s after the audio resumed ($(prop kwsd ActiveState)), or the result was not 'watchdog' (${ended:-})"
        fi
    else
        ct systemctl kill -s SIGCONT kwsd-check-feed
        result watchdog FAIL "watchdog timeout logged, but no restart in 40 s: $(prop kwsd ActiveState)/$(prop kwsd SubState)"
    fi
else
    ct systemctl kill -s SIGCONT kwsd-check-feed
    result watchdog FAIL "no watchdog timeout in 40 s of silence: $(prop kwsd ActiveState), NRestarts $(prop kwsd NRestarts)"
fi
ct journalctl -u kwsd --no-pager -o cat | grep -E 'Watchdog|watchdog|no audio|Main process exited|Scheduled restart|Failed with' \
    >"$LOGS/watchdog.txt" || true

# (e) a config error: exit 78, failed, and not restarted.
ct sh -c 'printf "audio:\n  block_ms: fast\n" >>/etc/kwsd/config.yaml'
T=$(now_ms)
scheduled_count() { ct journalctl -u kwsd --no-pager -o cat | grep -c 'Scheduled restart job' || true; }
scheduled_before=$(scheduled_count)
ct timeout 60 systemctl restart kwsd >/dev/null 2>&1 || true
restarts_before=$(prop kwsd NRestarts)
sleep 12  # more than twice RestartSec=5: time for any restart to happen
state="$(prop kwsd ActiveState)/$(prop kwsd Result) status=$(prop kwsd ExecMainStatus)"
restarts_after=$(prop kwsd NRestarts)
reason=$(ct journalctl -u kwsd --no-pager -o cat | grep 'kwsd: error' | tail -1 || true)
scheduled=$(($(scheduled_count) - scheduled_before))
if [[ $state == "failed/exit-code status=78" && $scheduled == 0 && $restarts_after == "$restarts_before" ]]; then
    result nostart PASS "$state, not restarted in 12 s (NRestarts $restarts_after); journal: \"$reason\""
else
    result nostart FAIL "$state, $scheduled restart(s) scheduled, NRestarts $restarts_before -> $restarts_after; journal: \"$reason\""
fi

# The hardening as systemd in the container rates it.
SECURITY=$(ct systemd-analyze security --no-pager kwsd.service 2>&1 | grep -o 'Overall exposure level.*' || true)

# ---------------------------------------------------------------------------------------
# 6. Summary

ct journalctl -u kwsd --no-pager -o short-monotonic >"$LOGS/kwsd-journal.txt" 2>&1 || true
echo
echo "== tools/check_systemd.sh: kwsd.service under systemd $(ct systemctl --version | head -1 | cut -d' ' -f2) in systemd-nspawn"
printf '%s\n' "${RESULTS[@]}"
echo "security: ${SECURITY:-systemd-analyze security printed no exposure level}"
echo "timings: host tools $(secs "$HOST_TOOLS_MS") s, debootstrap root $(secs "$BASE_MS") s (0.0 = cached)," \
    "fresh copy of it $(secs "$COPY_MS") s, install $(secs "$INSTALL_MS") s, boot $(secs "$BOOT_MS") s, checks $(secs $(($(now_ms) - CHECKS_MS))) s," \
    "total $(secs $(($(now_ms) - START_MS))) s (and the container's poweroff)"
echo "logs: $LOGS"
if ((FAILED)); then
    echo "FAIL"
    tail -40 "$LOGS/kwsd-journal.txt"
    exit 1
fi
echo "PASS"
