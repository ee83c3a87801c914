#!/usr/bin/env bash
# Host-side checks of the test harness and the runner: kernel images that
# must FAIL, each in exactly the expected way. A harness that reported green
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
passed=0 failed=0

# check NAME EXPECTED_EXIT PATTERN... : run example NAME, require its exit
# code and every pattern (grep -E) in its combined output.
check() {
    local name=$1 want=$2; shift 2
    local out rc why=""
    out=$(scripts/qemu-runner "$dir/$name" 2>&1); rc=$?
    [ "$rc" = "$want" ] || why="exit code $rc, expected $want"
    for pattern in "$@"; do
        grep -qE -- "$pattern" <<<"$out" || why="${why:+$why; }output lacks /$pattern/"
    done
    if [ -z "$why" ]; then
        echo "selfcheck $name ... ok"; passed=$((passed + 1))
    else
        echo "selfcheck $name ... FAILED: $why"; echo "$out" | sed 's/^/    | /'; failed=$((failed + 1))
    fi
}

check must_fail_assertion 101 \
    '^test fails_on_purpose \.\.\. FAILED' \
    'a deliberately failing assertion' \
    '^test result: FAILED\. 1 passed; 1 failed;'
LAZYMMU_TIMEOUT=5 check must_fail_hang 124 \
    'hanging on purpose' \
    'qemu-runner: TIMEOUT: must_fail_hang did not exit within 5s'
check must_fail_fault 4 \
    'kernel fault: unhandled synchronous exception' \
    'exception: Data Abort \(current EL\) \(EC 0x25\)' \
    'fault: +translation fault, level 0, on a read' \
    'FAR_EL1: +0x0000000040000000' \
    'ELR_EL1: +0xffffffff8[0-9a-f]+ <must_fail_fault::read_a_low_address\+0x[0-9a-f]+>'
check must_fail_panic 3 \
    'kernel panic at tests/must_fail/panic\.rs:[0-9]+:[0-9]+' \
    'a deliberate panic, value 42'

echo "selfcheck: $passed passed, $failed failed"
[ "$failed" = 0 ]
