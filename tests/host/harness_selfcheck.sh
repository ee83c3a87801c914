#!/usr/bin/env bash
# Host-side checks of the test harness and the runner: kernel images that
# must FAIL, each in exactly the expected way (one of them killed from
# outside: a QEMU ended by a signal must not pass). A harness that reported green
# here, or a runner that hung, would make every other result worthless.
#
# Prints one line per check and a closing "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."

if ! cargo build -q --examples; then
    echo "selfcheck: cannot build the must-fail images"
    echo "selfcheck: 0 passed, 1 failed"
    exit 1
fi
dir=target/aarch64-unknown-none-softfloat/debug/examples
PREFIX=selfcheck
source tests/host/check.sh

check must_fail_assertion 101 scripts/qemu-runner "$dir/must_fail_assertion" -- \
    '^test fails_on_purpose \.\.\. FAILED' \
    'a deliberately failing assertion' \
    '^test result: FAILED\. 1 passed; 1 failed;'
LAZYMMU_TIMEOUT=5 check must_fail_hang 124 scripts/qemu-runner "$dir/must_fail_hang" -- \
    'hanging on purpose' \
    'qemu-runner: TIMEOUT: must_fail_hang did not exit within 5s'
# QEMU sent SIGTERM (as by a user, a CI job's cancel or the OOM killer's
# first try) ends cleanly with exit code 0, like a kernel that passed. The
# hang image is killed once it has printed its line; the runner must fail.
kill_qemu_mid_run() {
    local pidfile out runner rc
    pidfile=$(mktemp) out=$(mktemp)
    LAZYMMU_TIMEOUT=30 LAZYMMU_QEMU_ARGS="-pidfile $pidfile" \
        scripts/qemu-runner "$dir/must_fail_hang" >"$out" 2>&1 &
    runner=$!
    for _ in $(seq 200); do
        grep -q 'hanging on purpose' "$out" && [ -s "$pidfile" ] && break
        sleep 0.1
    done
    kill -TERM "$(<"$pidfile")"
    wait "$runner"; rc=$?
    cat "$out"; rm -f "$pidfile" "$out"
    return $rc
}
check must_fail_hang_killed 125 kill_qemu_mid_run -- \
    'hanging on purpose' \
    'terminating on signal 15' \
    'qemu-runner: must_fail_hang did not end through the kernel.s exit: QEMU exited with code 0, the kernel recorded no exit'
check must_fail_fault 4 scripts/qemu-runner "$dir/must_fail_fault" -- \
    'kernel fault: unhandled synchronous exception' \
    'exception: Data Abort \(current EL\) \(EC 0x25\)' \
    'fault: +translation fault, level 0, on a read' \
    'FAR_EL1: +0x0000000040000000' \
    'ELR_EL1: +0xffffffff8[0-9a-f]+ <must_fail_fault::read_a_low_address\+0x[0-9a-f]+>'
check must_fail_panic 3 scripts/qemu-runner "$dir/must_fail_panic" -- \
    'kernel panic at tests/must_fail/panic\.rs:[0-9]+:[0-9]+' \
    'a deliberate panic, value 42'
check must_fail_rule 101 scripts/qemu-runner "$dir/must_fail_rule" -- \
    '^test keeps_the_rules \.\.\. ok' \
    '^pgtable_check: VIOLATION of rule `break-before-make` on cpu 0, task boot/0:' \
    'entry: L3 entry for VA 0xffff8000[0-9a-f]+ \(slot 0x[0-9a-f]+\): page -> 0x[0-9a-f]+ RW -> page -> 0x[0-9a-f]+ RW' \
    'at 0xffffffff8[0-9a-f]+ <' \
    '^page-table rules broken: 1 break-before-make' \
    '^test result: FAILED\. 1 passed; 1 failed;'
check must_fail_poison 101 scripts/qemu-runner "$dir/must_fail_poison" -- \
    '^---- fails_half_way_through_a_mapping ----' \
    'a deliberate failure in the middle of a walk' \
    '^test the_next_test_starts_clean \.\.\. ok' \
    '^test and_so_does_the_one_after \.\.\. ok' \
    '^test result: FAILED\. 2 passed; 1 failed;'
# A panic under Exclusive stops the kernel: the test is not recovered (it
# would leave the tables' lock held, and the next walk would hang).
check must_fail_exclusive 3 scripts/qemu-runner "$dir/must_fail_exclusive" -- \
    '^test panics_holding_exclusive \.\.\. $' \
    'kernel panic at tests/must_fail/exclusive\.rs:[0-9]+:[0-9]+' \
    'a deliberate panic under Exclusive' \
    'while holding pgtable::Exclusive: tables may be half unlinked'
# A walk that waits for the tables' lock forever, interrupts masked (the
# Exclusive it waits for masked them): only the runner can stop it, and
# the wait has said what it waits for, and where, long before.
LAZYMMU_TIMEOUT=8 check must_fail_walk_wait 124 scripts/qemu-runner "$dir/must_fail_walk_wait" -- \
    '^test a_walk_waits_for_an_exclusive_never_let_go \.\.\. $' \
    '\*\*\* lock wait: TABLES for a walk \(exclusive\(\) holds it\) not taken after 2 s \(1 holder\(s\)\), waiting at tests/must_fail/walk_wait\.rs:[0-9]+:[0-9]+ \(cpu 0, task boot/0\); still waiting \*\*\*' \
    'qemu-runner: TIMEOUT: must_fail_walk_wait did not exit within 8s'
check must_fail_slow 101 scripts/qemu-runner "$dir/must_fail_slow" test_time_limit=2 -- \
    '^test passes \.\.\. ok' \
    '^test never_finishes \.\.\. TIMED OUT' \
    'did not finish within 2 s' \
    'the run stopped at never_finishes'

summary
