#!/usr/bin/env bash
# The soak run (not in CI): 30 minutes of OTLP traces, metrics and logs at half the measured
# ingest ceiling, 1% malformed and hostile requests, a simulated GPU fleet with faults, a webhook
# receiver that fails one delivery in five, a SIGKILL every 5 minutes and the disk filled once.
# See tests/tests/soak.rs for what it checks; the report goes to stdout and to soak-report.json.
#
#   scripts/soak.sh                 # release build, 30 minutes
#   SOAK_PROFILE=dev VIGIL_SOAK_SECS=300 VIGIL_SOAK_KILL_EVERY_SECS=60 scripts/soak.sh
#
# As root, the data directory goes on a loop-mounted ext4 image (SOAK_DISK_GB, default 40) so
# that filling it fills nothing else; otherwise the run skips the disk-full phase and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${SOAK_PROFILE:-release}"
# One invocation for both: built apart, they resolve different dependency features and each
# rebuilds most of the tree for the other.
cargo build --workspace --bins --tests --profile "$profile"
target="${CARGO_TARGET_DIR:-target}"
case "$profile" in dev) dir=debug ;; *) dir="$profile" ;; esac
# VIGIL_BIN, when set, names the binary under test (e.g. a release build kept from earlier).
if [ -z "${VIGIL_BIN:-}" ]; then
    export VIGIL_BIN="$PWD/$target/$dir/vigil"
    [ -x "$VIGIL_BIN" ] || export VIGIL_BIN="$target/$dir/vigil"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/vigil-soak.XXXXXX")"
cleanup() {
    # Whatever the test left running (it cannot clean up after an abort) holds the mount.
    pkill -9 -f "$work" 2>/dev/null || true
    sleep 1
    if mountpoint -q "$work/mnt" 2>/dev/null; then umount "$work/mnt" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$(id -u)" -eq 0 ] && command -v mkfs.ext4 >/dev/null && losetup -f >/dev/null 2>&1; then
    mkdir -p "$work/mnt"
    # The image is sparse: filling it fills the disk it lives on, which must have the room.
    free_gb=$(df -P -BG "$work" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
    if [ "${SOAK_DISK_GB:-40}" -ge "$free_gb" ]; then
        echo "==> SOAK_DISK_GB=${SOAK_DISK_GB:-40} but only ${free_gb} GB are free under $work: set a smaller SOAK_DISK_GB" >&2
        exit 1
    fi
    truncate -s "${SOAK_DISK_GB:-40}G" "$work/disk.img"
    # No blocks reserved for root: the collector may run as root, and ext4's 5% reserve would
    # let it write on past a disk that `df` shows full.
    mkfs.ext4 -q -m 0 "$work/disk.img"
    mount -o loop "$work/disk.img" "$work/mnt"
    export VIGIL_SOAK_DIR="$work/mnt" VIGIL_SOAK_FILL=1
else
    echo "==> not root or no loop device: the data directory shares its disk, no disk-full phase"
    export VIGIL_SOAK_DIR="$work"
fi
# The test's own files (config, logs, ground truth) go under $work too, so cleanup finds them.
mkdir -p "$work/tmp"
export TMPDIR="$work/tmp"
export VIGIL_SOAK_REPORT="${VIGIL_SOAK_REPORT:-$PWD/soak-report.json}"

cargo test --workspace --profile "$profile" --test soak -- --ignored --nocapture soak
