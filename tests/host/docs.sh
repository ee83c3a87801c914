#!/usr/bin/env bash
# The docs check: every chapter has its heading and its "Reproduce:" command,
# every figure exists, every number quoted from the bench equals the cell of
# docs/bench/results.csv it came from, and every command the docs name runs
# and exits 0 (see docs_lint.py for which commands and how).
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

while IFS= read -r command; do
    [ -n "$command" ] || continue
    check "\$ $command" 0 bash -c "$command" --
done < <(tests/host/docs_lint.py commands)

summary
