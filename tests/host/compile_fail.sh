#!/usr/bin/env bash
# Compile-fail checks (a trybuild of our own, see tests/compile_fail/README.md):
# what the API rules out must not compile. Each snippet in tests/compile_fail/
# is compiled against the kernel library as it is (it must compile), then
# once per `//! case: NAME ERROR` line with `--cfg case="NAME"` (it must fail,
# with that error code and no other).
#
# Prints one line per check and a closing "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."

if ! cargo build -q --lib; then
    echo "compile-fail: cannot build the kernel library"
    echo "compile-fail: 0 passed, 1 failed"
    exit 1
fi
target=aarch64-unknown-none-softfloat
dir=$PWD/target/$target/debug
# The sysroot crates were built by cargo (build-std): name them, as cargo does.
externs=()
for crate in core alloc compiler_builtins; do
    rlibs=("$dir"/deps/lib"$crate"-*.rlib)
    if ((${#rlibs[@]} != 1)); then
        echo "compile-fail: expected one $crate rlib in $dir/deps, found ${#rlibs[@]} (cargo clean?)"
        echo "compile-fail: 0 passed, 1 failed"
        exit 1
    fi
    externs+=(--extern "noprelude:$crate=${rlibs[0]}")
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

compile() { # snippet [cfg]: rustc's exit code; its messages in $out/log
    local cfg=()
    [[ -n ${2:-} ]] && cfg=(--cfg "case=\"$2\"")
    RUSTC_BOOTSTRAP=1 rustc +lazymmu -Z unstable-options --edition 2024 --target "$target" \
        --crate-type rlib --emit metadata -o "$out/snippet.rmeta" \
        -L "dependency=$dir/deps" -L "dependency=$PWD/target/debug/deps" "${externs[@]}" \
        --extern "lazymmu=$dir/liblazymmu.rlib" "${cfg[@]}" "$1" >"$out/log" 2>&1
}

passed=0 failed=0
ok() { echo "compile-fail $1 ... ok"; passed=$((passed + 1)); }
bad() { echo "compile-fail $1 ... FAILED: $2"; sed 's/^/    /' "$out/log" | head -30; failed=$((failed + 1)); }

for snippet in tests/compile_fail/*.rs; do
    name=$(basename "$snippet" .rs)
    if compile "$snippet"; then ok "$name (the right use compiles)"; else bad "$name" "the right use does not compile"; fi
    cases=$(sed -n 's|^//! case: \([a-z_]*\) \(E[0-9]*\)$|\1 \2|p' "$snippet")
    [[ -n $cases ]] || bad "$name" "no '//! case: NAME ERROR' line"
    while read -r case code; do
        [[ -n $case ]] || continue
        if compile "$snippet" "$case"; then
            bad "$name/$case" "compiled; expected error $code"
        elif ! grep -q "^error\[$code\]" "$out/log"; then
            bad "$name/$case" "failed, but not with error $code"
        elif grep '^error\[E' "$out/log" | grep -qv "^error\[$code\]"; then
            bad "$name/$case" "failed with $code and with other errors too"
        else
            ok "$name/$case ($code)"
        fi
    done <<<"$cases"
done
echo "compile-fail: $passed passed, $failed failed"
((failed == 0))
