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
PREFIX=commands
source tests/host/check.sh

# Every command runs with the page-table rules checker on (the default)
# and must end with no rule broken.
clean='^pgtable_check: [0-9]+ checks, 0 violations'
check "(none)" 0 scripts/qemu-runner "$kernel" -- '^memory map \(from the device tree\):' '^usage: cargo run' "$clean"
check "ptdump" 0 scripts/qemu-runner "$kernel" ptdump -- 'linear map' "$clean"
check "(none), pgtable_check=off" 0 scripts/qemu-runner "$kernel" pgtable_check=off -- '^usage: cargo run'
check "unknown command" 2 scripts/qemu-runner "$kernel" frobnicate -- 'unknown command'
check "demo lazy, no such backend" 2 scripts/qemu-runner "$kernel" demo lazy --backend lazy -- 'the backends are eager, batched, deferred-writes'

# Small mistakes get a message that says which one.
check "demo, with no name" 2 scripts/qemu-runner "$kernel" demo -- 'demo: which one\? The demos are lazy, kasan, pagealloc'
check "demo, no such demo" 2 scripts/qemu-runner "$kernel" demo frob -- 'no demo "frob"; the demos are lazy, kasan, pagealloc'
check "demo kasan, an option it does not take" 2 scripts/qemu-runner "$kernel" demo kasan --fast -- 'demo kasan: unknown option "--fast"'
check "demo lazy, an unknown option" 2 scripts/qemu-runner "$kernel" demo lazy --fast -- 'demo lazy: unknown option "--fast"; it takes --backend NAME'
check "demo lazy, --backend without a name" 2 scripts/qemu-runner "$kernel" demo lazy --backend -- '--backend needs a name; the backends are'
check "bench, an unknown option" 2 scripts/qemu-runner "$kernel" bench --slow -- 'bench: unknown option "--slow"; it takes --tlb-only, --gib, --quick and --csv PATH'
check "bench --gib on the default 1 GiB machine" 2 scripts/qemu-runner "$kernel" bench --gib -- \
    '^bench --gib: [0-9]+ MiB free; 1 GiB of vmalloc_huge beside 1 GiB of vmalloc needs 2 GiB free \(boot with LAZYMMU_MEM=3G\)$'
# test_vmalloc: Linux's summary line per test (a few loops; the debug build,
# checker on: test_vmalloc turns it off unless asked), the tests Linux has and this kernel cannot run named as
# such, and a bad parameter named with the valid ones.
summary='passed: 1 failed: 0 repeat: 1 loops: 3 avg: [0-9]+ usec$'
check "test_vmalloc, every ported test" 0 scripts/qemu-runner "$kernel" pgtable_check=on test_vmalloc test_loop_count=3 run_test_mask=0x479 -- \
    "^Summary: fix_size_alloc_test $summary" "^Summary: random_size_alloc_test $summary" \
    "^Summary: fix_align_alloc_test $summary" "^Summary: random_size_align_alloc_test $summary" \
    '^Summary: align_shift_alloc_test passed: 0 failed: 1 repeat: 1 loops: 3 avg: [0-9]+ usec$' \
    "^Summary: vm_map_ram_test $summary" '^All test took worker0=[0-9]+ cycles$' "$clean"
check "test_vmalloc, the tests left out" 0 scripts/qemu-runner "$kernel" test_vmalloc test_loop_count=1 run_test_mask=0x380 -- \
    '^Skipped: pcpu_alloc_test: no per-CPU allocator in this kernel$' \
    '^Skipped: kvfree_rcu_1_arg_vmalloc_test: no RCU in this kernel$' \
    '^Skipped: kvfree_rcu_2_arg_vmalloc_test: no RCU in this kernel$'
check "test_vmalloc, a loop count of 0" 2 scripts/qemu-runner "$kernel" test_vmalloc test_loop_count=0 -- \
    'test_vmalloc: test_loop_count=0: test_loop_count is loops of each test, 1 to 4294967295'
check "test_vmalloc, a parameter Linux has and this port does not" 2 scripts/qemu-runner "$kernel" test_vmalloc nr_threads=2 -- \
    'test_vmalloc: no parameter "nr_threads"; the parameters are nr_pages, test_loop_count, test_repeat_count, run_test_mask'
check "test_vmalloc, a mask with no test" 2 scripts/qemu-runner "$kernel" test_vmalloc run_test_mask=0 -- \
    'test_vmalloc: run_test_mask=0: run_test_mask is the tests to run, bit i for test i: 1 to 2147483647'
check "an option instead of a command" 2 scripts/qemu-runner "$kernel" --frob -- 'unknown option "--frob": options come after a command'
check "--help" 0 scripts/qemu-runner "$kernel" --help -- '^usage: cargo run'
check "ptdump, an option it does not take" 2 scripts/qemu-runner "$kernel" ptdump --all -- 'ptdump: unknown option "--all"; it takes none'
check "fuzz, a negative number of operations" 2 scripts/qemu-runner "$kernel" fuzz --ops -1 -- \
    'fuzz: --ops -1: the number of operations per backend is a whole number from 0 to 18446744073709551615'
check "fuzz, a seed that is not a number" 2 scripts/qemu-runner "$kernel" fuzz --seed abc -- \
    'fuzz: --seed abc: the seed is a whole number from 0 to 18446744073709551615'
check "fuzz, no such backend" 2 scripts/qemu-runner "$kernel" fuzz --backend Batched -- \
    'fuzz: no backend "Batched"; the backends are eager, batched, deferred-writes'
check "fuzz, no such planted bug" 2 scripts/qemu-runner "$kernel" fuzz --break nope -- \
    'fuzz: no planted bug "nope"; the bugs are [a-z-]+(, [a-z-]+)+$'
check "fuzz, an unknown option" 2 scripts/qemu-runner "$kernel" fuzz --fast 1 -- \
    'fuzz: unknown option "--fast"; it takes --seed N, --ops N, --cpus N, --backend NAME and --break BUG'
check "fuzz, more CPUs than are online" 2 scripts/qemu-runner "$kernel" fuzz --cpus 3 -- \
    'fuzz: --cpus 3: a number of CPUs from 1 to the 2 online \(LAZYMMU_SMP sets how many QEMU starts\)'
check "fuzz, an option without its value" 2 scripts/qemu-runner "$kernel" fuzz --ops -- 'fuzz: --ops needs a value'
check "a boolean boot option that is not one" 2 scripts/qemu-runner "$kernel" debug_pagealloc=maybe -- \
    'debug_pagealloc=maybe: not a boolean'
check "a boolean boot option as Linux's kstrtobool reads it" 0 scripts/qemu-runner "$kernel" debug_pagealloc=YES -- \
    '^debug_pagealloc: on'
check "LAZYMMU_SMP above the kernel's limit" 2 env LAZYMMU_SMP=9 scripts/qemu-runner "$kernel" -- 'LAZYMMU_SMP=9: the kernel runs on 1 to 8 CPUs'
check "LAZYMMU_SMP at the kernel's limit" 0 env LAZYMMU_SMP=8 scripts/qemu-runner "$kernel" -- '\(8 in the device tree, 8 online\)'
# Under -icount QEMU runs the vCPUs by turns, in one thread: a CPU waiting
# for another must yield it the turn (cpu::relax), or a wait timed by the
# generic timer runs out before the other has run (scripts/bench --quick).
check "every CPU comes up under -icount" 0 env LAZYMMU_SMP=4 LAZYMMU_QEMU_ARGS="-icount shift=0" scripts/qemu-runner "$kernel" -- \
    '\(4 in the device tree, 4 online\)'
check "LAZYMMU_MEM too small" 2 env LAZYMMU_MEM=4M scripts/qemu-runner "$kernel" -- 'LAZYMMU_MEM=4M is too small: the kernel needs at least 8M'
check "a CPU model QEMU cannot boot the kernel on" 1 env LAZYMMU_CPU=cortex-a7 scripts/qemu-runner "$kernel" -- \
    "QEMU could not start the kernel" "CPU model 'cortex-a7'"

# Each backend's trace shows its own behaviour, and the per-backend table
# counts the same 16 entry writes (13 in sections) with exactly the barriers
# that behaviour implies: eager pays a pair per valid write (12) plus the TLB
# flush's dsb ishst; batched and deferred-writes pay one pair per flush point.
check "demo lazy --backend eager" 0 scripts/qemu-runner "$kernel" demo lazy --backend eager -- \
    '^==== demo lazy: backend eager' \
    '^eager +16 +13 +13 +13 +3 +1 +4 +1 +2$' "$clean"
check "demo lazy --backend batched" 0 scripts/qemu-runner "$kernel" demo lazy --backend batched -- \
    'barriers deferred \(pending\)' \
    'nested exit, arch flush \(pending yes\)' \
    '\[  irq   \]   \| lazy_mmu_mode_enable\(\): in interrupt context, does nothing' \
    'context switch: boot/0 \(pending yes, depth 1\) -> other' \
    '^batched +16 +13 +9 +9 +3 +1 +4 +1 +2$' "$clean"
check "demo lazy --backend deferred-writes" 0 scripts/qemu-runner "$kernel" demo lazy --backend deferred-writes -- \
    'store queued \(4 waiting\), memory still holds the old entry' \
    'a read of entry 3 from memory finds: invalid' \
    'apply 4 queued stores' \
    '^deferred-writes +16 +13 +9 +9 +3 +1 +4 +1 +2$' "$clean"
# The staged race: 100 trials each, deterministic (preemption off). The
# checker reports each double mapping as a break-before-make violation,
# shown on purpose, and nothing else.
check "demo kasan" 0 scripts/qemu-runner "$kernel" demo kasan -- \
    '^batched +nothing \(stays lazy\) +100 +100 +0 +0$' \
    '^deferred-writes +nothing \(stays lazy\) +100 +200 +100 +100$' \
    '^deferred-writes +pause/resume +100 +100 +0 +0$' \
    "$clean \\(100 more broken on purpose"

# Roberts' page-allocator RFC: with debug_pagealloc each allocation in the populate callback
# nests a section (N + 1 = 9 pairs for 8 pages), _nolazy pays 2N = 16, and
# a map-back left in the caller's section faults under deferred-writes.
check "demo pagealloc, debug_pagealloc=on" 0 scripts/qemu-runner "$kernel" debug_pagealloc=on demo pagealloc -- \
    '^debug_pagealloc is on' \
    '^nesting \(apply_to_page_range\) +batched +16 +9 +9 +8 +8 +0 +0$' \
    '^_nolazy variant +batched +16 +16 +16 +0 +0 +0 +0$' \
    "^none: map-back in caller's section +batched +16 +1 +1 +0 +8 +0 +8$" \
    "^none: map-back in caller's section +deferred-writes +16 +1 +1 +0 +8 +8 +8$" \
    "$clean \\(16 more broken on purpose"
check "demo pagealloc, without the option" 0 scripts/qemu-runner "$kernel" demo pagealloc -- \
    '^debug_pagealloc is off' \
    '^nesting \(apply_to_page_range\) +batched +8 +1 +1 +0 +8 +0 +0$' \
    '^_nolazy variant +batched +8 +8 +8 +0 +0 +0 +0$' "$clean"
# The bench at small N checks its own counts (batched: one pair per
# vmalloc whatever N; eager: one per entry; vfree: one TLB flush; ...).
# The terminal gets a summary (a debug build says its times are not for
# quoting) and the CSV goes to the host file named.
bench_csv=$(mktemp -d)
trap 'rm -rf "$bench_csv"' EXIT
check "bench --quick" 0 scripts/qemu-runner "$kernel" bench --quick --csv "$bench_csv/quick.csv" -- \
    '^bench \[31/31\] map / modify / unmap' '^==== headline: .*\[debug build: not for quoting\] ====$' \
    '^bench: [0-9]+ rows written to .*/quick.csv \(on the host\)$' 'every count check passed' \
    '^pgtable_check: off while measuring' '^bench: a debug build: .*not for quoting'
check "bench --quick: the CSV it wrote" 0 cat "$bench_csv/quick.csv" -- '^vmalloc,batched,512,515,1,0,1,0,' \
    '^fix_size_alloc_test,batched,1,2,2,1,2,1,' '^fix_size_live_200k,batched,1,2,2,1,2,1,' \
    '^map,aarch64-paging-live,512,[0-9]+,,,,,'
check "bench --quick, -cpu cortex-a72" 0 env LAZYMMU_CPU=cortex-a72 scripts/qemu-runner "$kernel" bench --quick --csv "$bench_csv/a72.csv" -- \
    'every count check passed'
check "bench --quick, -cpu cortex-a72: the CSV it wrote" 0 cat "$bench_csv/a72.csv" -- '^tlb_unmap,per-page,512,0,1,1,1,512,'
check "bench --tlb-only --quick, one CPU: its table" 0 env LAZYMMU_SMP=1 scripts/qemu-runner "$kernel" bench --tlb-only --quick --csv "$bench_csv/tlb.csv" -- \
    '^lazymmu bench --tlb-only --quick: counter at [0-9]+ Hz, 1 CPU online$' \
    '^tlb_flush_1cpu +per-page +[0-9]+\.[0-9]{6} ' '^\(times are wall-clock under QEMU TCG: a busy host inflates them; the counts are exact\)$'
check "bench, --csv without a path" 2 scripts/qemu-runner "$kernel" bench --csv -- 'bench: --csv needs a path on the host'
# The bounded fuzz campaign: several seeds, every backend, both CPUs, the
# page-table rules checked at every step.
for seed in 1 2 3; do
    check "fuzz --seed $seed --ops 2000" 0 scripts/qemu-runner "$kernel" fuzz --seed $seed --ops 2000 -- \
        '^fuzz: deferred-writes: 2000 ops, [0-9]+ page checks, final sweep and teardown: ok$' '^fuzz: no divergence$' "$clean"
done
# Each backend alone too: the first backend of a run meets the linear map's
# blocks fresh (a split stays split), so deferred-writes alone splits them.
for run in 5:deferred-writes 6:batched; do
    IFS=: read -r seed backend <<<"$run"
    check "fuzz --seed $seed --ops 2000 --backend $backend" 0 scripts/qemu-runner "$kernel" fuzz --seed "$seed" --ops 2000 --backend "$backend" -- \
        "^fuzz: $backend: 2000 ops, [0-9]+ page checks, final sweep and teardown: ok$" '^fuzz: no divergence$' "$clean"
done
check "fuzz --seed 4 --ops 2000, -cpu cortex-a72" 0 env LAZYMMU_CPU=cortex-a72 scripts/qemu-runner "$kernel" fuzz --seed 4 --ops 2000 -- \
    '^fuzz: eager: 2000 ops' '^fuzz: no divergence$' "$clean"
# The checks' self-test: each bug planted (kernel/planted.rs) is caught by
# the page-table rules checker, which names the rule it broke. Each runs
# under the backend where the bug does something (batched leaves its
# sections without the pair; a walk guard drops queued stores only under
# deferred-writes).
for planted in skip-table-dmb:link-order:eager swap-pair:barrier-order:eager skip-leave-pair:publish:batched \
    skip-tlb-flush:invalidate:eager break-live-block:break-before-make:eager free-before-flush:invalidate:eager \
    early-guard-drop:table-lifetime:deferred-writes reuse-before-purge:break-before-make:eager \
    cont-partial-write:contiguous:eager cont-misaligned:contiguous:eager cont-split-live:contiguous:eager:3 \
    upgrade-unflushed:invalidate:eager \
    device-alias:mismatched-alias:eager skip-icache:icache:eager:3 local-tlb-flush:invalidate:eager \
    vfree-frees-early:freed-while-mapped:eager; do
    # (A fourth field is the seed, where seed 1's 2000 ops never reach the bug:
    # skip-icache needs a vmalloc page made executable, which seed 1 never does.)
    IFS=: read -r bug rule backend seed <<<"$planted"
    seed=${seed:-1}
    check "fuzz --break $bug is caught: rule $rule" 5 scripts/qemu-runner "$kernel" fuzz --seed "$seed" --ops 2000 --backend "$backend" --break "$bug" -- \
        "^fuzz: PAGE-TABLE RULE \`$rule\` BROKEN under $backend at op #" \
        "^pgtable_check: VIOLATION of rule \`$rule\`" \
        "reproduce: cargo run -- fuzz --seed $seed --ops [0-9]+ --backend $backend --break $bug"
done
# The fuzzer's own model finds a missing TLB flush too, with the checker off.
check "fuzz finds a deliberately missing TLB flush, pgtable_check=off" 101 scripts/qemu-runner "$kernel" pgtable_check=off fuzz --seed 1 --ops 2000 --break skip-tlb-flush -- \
    '^fuzz: DIVERGENCE under eager at op #' 'should be unmapped' 'reproduce: cargo run -- pgtable_check=off fuzz --seed 1 --ops [0-9]+ --backend eager --break skip-tlb-flush'
# Two fuzzers at once over the shared tables, each its own model and seed;
# their interleaving differs from run to run (docs/README.md, the fuzzer).
check "fuzz --cpus 2 --seed 1 --ops 1500 --backend deferred-writes" 0 scripts/qemu-runner "$kernel" fuzz --cpus 2 --seed 1 --ops 1500 --backend deferred-writes -- \
    '^lazymmu fuzz: 2 CPUs at once, seeds 1 to 2 ' \
    '^fuzz: deferred-writes: cpu 1 \(seed 2\): 1500 ops, [0-9]+ page checks, [0-9]+ steps ended on another CPU' \
    '^fuzz: deferred-writes: 3000 ops on 2 CPUs, final sweep and teardown: ok$' '^fuzz: no divergence$' "$clean"
# A bug the one-CPU fuzzer catches, caught on two as well; and one that
# only a second CPU can see: a flush that stays on the CPU that made it
# (with the checker on, both fuzzers see its rule broken: the loop above).
check "fuzz --cpus 2 --break skip-tlb-flush is caught: rule invalidate" 5 scripts/qemu-runner "$kernel" fuzz --cpus 2 --backend eager --break skip-tlb-flush -- \
    '^fuzz: PAGE-TABLE RULE `invalidate` BROKEN under eager at op #[0-9]+ on cpu [01] ' \
    'reproduce: cargo run -- fuzz --cpus 2 --seed 1 --ops [0-9]+ --backend eager --break skip-tlb-flush'
# The stale entry shows in whichever check reads through it first: an
# unmapped page still read, a tag from the old frame, a vzalloc page not zero.
check "fuzz --cpus 2 finds a flush made on one CPU only, pgtable_check=off" 101 scripts/qemu-runner "$kernel" pgtable_check=off fuzz --cpus 2 --backend eager --break local-tlb-flush -- \
    '^fuzz: DIVERGENCE under eager at op #[0-9]+ on cpu [01] ' \
    'should be unmapped|the tag read through the mapping|the tag in its frame|a write \(page writable|vzalloc page 0x[0-9a-f]+: got Ok\([0-9]+\), expected Ok\(0\)' \
    'reproduce: cargo run -- pgtable_check=off fuzz --cpus 2 --seed 1 --ops [0-9]+ --backend eager --break local-tlb-flush'
# A stack the first fuzzer's CPU mapped, switched to on the other CPU
# without its isb: the receiving CPU's half of publishing.
check "fuzz --cpus 2 --break skip-receiver-isb is caught: rule publish-receiver" 5 scripts/qemu-runner "$kernel" fuzz --cpus 2 --backend eager --break skip-receiver-isb -- \
    '^fuzz: PAGE-TABLE RULE `publish-receiver` BROKEN under eager at op #[0-9]+ on cpu [01] ' \
    '^pgtable_check: VIOLATION of rule `publish-receiver`' \
    'reproduce: cargo run -- fuzz --cpus 2 --seed 1 --ops [0-9]+ --backend eager --break skip-receiver-isb'
check "demo lazy (all backends)" 0 scripts/qemu-runner "$kernel" demo lazy -- \
    '^==== demo lazy: backend eager' '^==== demo lazy: backend batched' '^==== demo lazy: backend deferred-writes' "$clean"

# The release build (what scripts/bench measures) has no test hooks: no
# planted bug, no fault injection, no test harness (kernel/planted.rs).
# Their symbols are looked for in the debug kernel too, so an empty list
# in release means they are gone, not that the search finds nothing.
hooks='lazymmu::planted::|lazymmu::testing::|frame_alloc::(REQUESTS|FAIL_AT|fail_request|requests|injected_failure)\b|recover_abandoned_walks|release_leaked_area|pgtable::map::RECLAIM_RACE'
nm_tool=$(command -v nm || command -v llvm-nm)
release=target/aarch64-unknown-none-softfloat/release/lazymmu
if cargo build -q --release --bin lazymmu; then
    hook_symbols() { "$nm_tool" -C "$1" | grep -E "$hooks"; }
    why=""
    if [ -z "$nm_tool" ]; then
        why="no nm (binutils) to read the symbols with"
    elif ! hook_symbols "$kernel" >/dev/null; then
        why="the debug kernel shows none either: the search is broken"
    elif left=$(hook_symbols "$release"); then
        why="the release kernel has them:"$'\n'"$left"
    fi
    label="release build: no planted-bug, fault-injection or test-harness symbol"
    if [ -z "$why" ]; then
        echo "$PREFIX $label ... ok"; passed=$((passed + 1))
    else
        echo "$PREFIX $label ... FAILED: $why"; failed=$((failed + 1))
    fi
    check "release build: fuzz --break is refused" 2 scripts/qemu-runner "$release" fuzz --break skip-tlb-flush -- \
        'fuzz: --break skip-tlb-flush: planted bugs exist only in debug builds'
else
    echo "$PREFIX release build ... FAILED: cannot build it"; failed=$((failed + 1))
fi

summary
