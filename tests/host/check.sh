# Sourced by the host checks: one way to run a kernel image and judge it.
#
# check LABEL EXPECTED_EXIT COMMAND... -- PATTERN...
#   runs COMMAND, requires its exit code and every PATTERN (grep -E) in its
#   combined output, and prints "PREFIX LABEL ... ok" or the output that
#   failed. Counts into $passed and $failed; `summary` prints them and
#   returns non-zero if anything failed. Set PREFIX before use.
passed=0 failed=0

check() {
    local label=$1 want=$2; shift 2
    local command=() out rc why=""
    while [ "$1" != "--" ]; do command+=("$1"); shift; done
    shift
    out=$("${command[@]}" 2>&1); rc=$?
    out=${out//$'\r'/}   # the console ends lines with CR LF
    [ "$rc" = "$want" ] || why="exit code $rc, expected $want"
    for pattern in "$@"; do
        grep -qE -- "$pattern" <<<"$out" || why="${why:+$why; }output lacks /$pattern/"
    done
    if [ -z "$why" ]; then
        echo "$PREFIX $label ... ok"; passed=$((passed + 1))
    else
        echo "$PREFIX $label ... FAILED: $why"; echo "$out" | sed 's/^/    | /'; failed=$((failed + 1))
    fi
}

summary() {
    echo "$PREFIX: $passed passed, $failed failed"
    [ "$failed" = 0 ]
}
