#!/usr/bin/env bash
# Host-side checks of the boot binary's commands (`cargo run -- ...`): each
# runs under QEMU and must exit as documented and print what it promises.
# The demo runs with preemption off, so its trace and counts are exact.
#
# Prints one line per check and a closing "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."

if ! cargo build -q --bin lazymmu; then
    echo "commands: cannot build the kernel"
    echo "commands: 0 passed, 1 failed"
    exit 1
fi
kernel=target/aarch64-unknown-none-softfloat/debug/lazymmu
passed=0 failed=0

# check LABEL EXPECTED_EXIT ARGS... -- PATTERN... : run the kernel with ARGS,
# require its exit code and every pattern (grep -E) in its output.
check() {
    local label=$1 want=$2; shift 2
    local args=() out rc why=""
    while [ "$1" != "--" ]; do args+=("$1"); shift; done
    shift
    out=$(scripts/qemu-runner "$kernel" "${args[@]}" 2>&1); rc=$?
    out=${out//$'\r'/}   # the console ends lines with CR LF
    [ "$rc" = "$want" ] || why="exit code $rc, expected $want"
    for pattern in "$@"; do
        grep -qE -- "$pattern" <<<"$out" || why="${why:+$why; }output lacks /$pattern/"
    done
    if [ -z "$why" ]; then
        echo "commands $label ... ok"; passed=$((passed + 1))
    else
        echo "commands $label ... FAILED: $why"; echo "$out" | sed 's/^/    | /'; failed=$((failed + 1))
    fi
}

check "(none)" 0 -- '^memory map \(from the device tree\):' '^usage: cargo run'
check "ptdump" 0 ptdump -- 'linear map'
check "unknown command" 2 frobnicate -- 'unknown command'
check "demo lazy, no such backend" 2 demo lazy --backend lazy -- 'the backends are eager, batched, deferred-writes'

# Each backend's trace shows its own behaviour, and the per-backend table
# counts the same 16 entry writes (13 in sections) with exactly the barriers
# that behaviour implies: eager pays a pair per valid write (12) plus the TLB
# flush's dsb ishst; batched and deferred-writes pay one pair per flush point.
check "demo lazy --backend eager" 0 demo lazy --backend eager -- \
    '^==== demo lazy: backend eager' \
    '^eager +16 +13 +13 +13 +3 +1 +4 +1 +2$'
check "demo lazy --backend batched" 0 demo lazy --backend batched -- \
    'barriers deferred \(pending\)' \
    'nested exit, arch flush \(pending yes\)' \
    '\[  irq   \]   \| lazy_mmu_mode_enable\(\): in interrupt context, does nothing' \
    'context switch: boot/0 \(pending yes, depth 1\) -> other' \
    '^batched +16 +13 +9 +9 +3 +1 +4 +1 +2$'
check "demo lazy --backend deferred-writes" 0 demo lazy --backend deferred-writes -- \
    'store queued \(4 waiting\), memory still holds the old entry' \
    'a read of entry 3 from memory finds: invalid' \
    'apply 4 queued stores' \
    '^deferred-writes +16 +13 +9 +9 +3 +1 +4 +1 +2$'
check "demo lazy (all backends)" 0 demo lazy -- \
    '^==== demo lazy: backend eager' '^==== demo lazy: backend batched' '^==== demo lazy: backend deferred-writes'

echo "commands: $passed passed, $failed failed"
[ "$failed" = 0 ]
