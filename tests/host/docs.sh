#!/usr/bin/env bash
# The docs check: every chapter has its heading and its "Reproduce:" command,
# every figure exists, every number quoted from the bench equals the cell of
# docs/bench/results.csv it came from, every code excerpt is still in the
# file it names, every command the docs name runs and exits 0, and every
# output block is what its command prints (see docs_lint.py for the rules).
#
# Prints one line per check and a closing "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."
PREFIX=docs
source tests/host/check.sh

lint=$(tests/host/docs_lint.py lint); lint_rc=$?
echo "$lint"
passed=$((passed + $(grep -c '\.\.\. ok$' <<<"$lint")))
failed=$((failed + $(grep -c '\.\.\. FAILED' <<<"$lint")))
[ $lint_rc = 0 ] || [ "$failed" -gt 0 ] || failed=1

# The diagrams drawn from the kernel's trace and sources are what
# scripts/diagrams draws today.
check "figures: docs/figures/*.svg are what scripts/diagrams draws" 0 scripts/diagrams --check --

# Every command the docs name, run once each, and every output block
# compared with what its command printed.
run=$(tests/host/docs_lint.py run); run_rc=$?
echo "$run"
passed=$((passed + $(grep -c '\.\.\. ok$' <<<"$run")))
failed=$((failed + $(grep -c '\.\.\. FAILED' <<<"$run")))
[ $run_rc = 0 ] || [ "$failed" -gt 0 ] || failed=$((failed + 1))

summary
