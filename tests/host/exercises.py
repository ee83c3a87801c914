#!/usr/bin/env python3
"""The exercises check: every change the docs tell the reader to make is
made, in a scratch copy of the tree, and does what the docs say it does.

  tests/host/exercises.py            every change of every docs/*.md
  tests/host/exercises.py NAME...    only these changes
  tests/host/exercises.py --list     the changes' names, and where each is

The docs declare a change and its effects with HTML comments, each alone on
its line:

  <!-- change: NAME in PATH -->
      on the line right before a ```diff block whose lines are context
      (' '), removed ('-') and added ('+'). The old text (context and
      removed lines, in order) must be in PATH exactly once; it becomes the
      context and added lines. A change in two places is two blocks with
      the same NAME, applied in order.
  <!-- fails after NAME: COMMAND: TEST TEST ... -->
      with the change made, COMMAND exits non-zero and the tests that fail
      are exactly these (a test fails when the harness prints
      `---- TEST ----` for it, or when the run stops inside it).
  <!-- passes after NAME: COMMAND -->
      with the change made, COMMAND exits 0.
  <!-- output after NAME: COMMAND -->
      on the line right before a ```text block: with the change made, the
      block is in what COMMAND prints, matched as docs_lint.py matches
      output (its normalisations; `...` alone a gap, `/* ... */` any text
      inside a line; otherwise consecutive lines consecutive).

The tracked files of the tree, as they are in the working tree, are copied
once into target/exercises/ (only the files that differ are written again,
so the build there stays incremental); the commands run there with their
own target directory, target/exercises/target/. One change at a time is
made, its commands run (each once), and its files are put back before the
next. A change whose old text is not found, or found twice, is refused:
that is how code that moved under an exercise is caught.

Prints one line per check ("exercises ... ok" / "... FAILED: why") and a
closing "exercises: N passed, N failed" line; exits non-zero if anything
failed.
"""
import fcntl
import os
import pathlib
import re
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from docs_lint import DOCS, OUTPUT_MARKER, ROOT, fences, find_in_order, normalise_output, output_blocks  # noqa: E402

SCRATCH = ROOT / "target" / "exercises"
TARGET = SCRATCH / "target"
LOGS = TARGET / "exercise-logs"
CHANGE = re.compile(r"^<!-- change: ([\w-]+) in (\S+) -->$")
FAILS = re.compile(r"^<!-- fails after ([\w-]+): (.+): ([^:]*?) -->$")
PASSES = re.compile(r"^<!-- passes after ([\w-]+): (.+?) -->$")
ANY_MARKER = re.compile(r"^<!-- (?:change|fails|passes|output)\b")
# The scratch copy lies inside the checkout, so cargo run there already
# reads the checkout's .cargo/config.toml (the same file): a second copy
# would be read as well and its lists (rustflags: the linker script)
# merged in twice.
NOT_COPIED = {".cargo/config.toml"}
# How much of a failed command's output to show.
TAIL = 40

PREFIX = "exercises"
passed = failed = 0


def report(label, why=None, output=None):
    """One check's line; a failed check shows the end of `output` too."""
    global passed, failed
    if not why:
        print(f"{PREFIX} {label} ... ok", flush=True)
        passed += 1
    else:
        print(f"{PREFIX} {label} ... FAILED: {why}", flush=True)
        if output:
            print("\n".join("    | " + line for line in output[-TAIL:]), flush=True)
        failed += 1


class Exercise:
    def __init__(self, name):
        self.name = name
        self.changes = []  # (where, path, old, new)
        self.checks = []  # (where, kind, command, expected)

    def commands(self):
        seen = []
        for _, _, command, _ in self.checks:
            if command not in seen:
                seen.append(command)
        return seen


def diff_sides(block):
    """The old and the new text of a diff block (lists of lines), or why it
    is not one."""
    old, new = [], []
    for line in block:
        mark, rest = line[:1], line[1:]
        if mark in (" ", ""):
            old.append(rest)
            new.append(rest)
        elif mark == "-":
            old.append(rest)
        elif mark == "+":
            new.append(rest)
        else:
            return None, None, f"a line that is not context, removed or added: {line!r}"
    if old == new:
        return None, None, "removes and adds nothing"
    return old, new, None


def read_docs():
    """Every exercise the docs declare, in the order they first appear, and
    the problems of the markers themselves."""
    exercises, problems = {}, []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        doc = path.relative_to(ROOT)
        lines = text.splitlines()

        def exercise(name):
            return exercises.setdefault(name, Exercise(name))

        for lineno, lang, before, block in fences(text):
            if lang != "diff":
                continue
            where = f"{doc}:{lineno}"
            marker = CHANGE.match(before.strip())
            if marker is None:
                problems.append(f"{where}: a diff block with no <!-- change: NAME in PATH --> on the line before it")
                continue
            old, new, why = diff_sides(block)
            if why:
                problems.append(f"{where}: {why}")
                continue
            exercise(marker.group(1)).changes.append((where, marker.group(2), old, new))
        # The output blocks by the line of their fence.
        blocks = {lineno: block for lineno, _, _, block in output_blocks(text)[0]}
        for i, line in enumerate(lines):
            line = line.strip()
            where = f"{doc}:{i + 1}"
            following = lines[i + 1] if i + 1 < len(lines) else ""
            fails, passes = FAILS.match(line), PASSES.match(line)
            if fails and not fails.group(3).split():
                problems.append(f"{where}: a fails marker that names no test")
            elif fails:
                tests = fails.group(3).split()
                exercise(fails.group(1)).checks.append((where, "fails", fails.group(2), tests))
            elif passes:
                exercise(passes.group(1)).checks.append((where, "passes", passes.group(2), None))
            elif CHANGE.match(line):
                if not following.startswith("```diff"):
                    problems.append(f"{where}: a change marker not on the line right before a ```diff block")
            elif OUTPUT_MARKER.match(line):
                output = OUTPUT_MARKER.match(line)
                if not following.startswith("```text"):
                    problems.append(f"{where}: an output marker not on the line right before a ```text block")
                elif output.group(1):
                    fence = f"{doc}:{i + 2}"
                    exercise(output.group(1)).checks.append((fence, "output", output.group(2), blocks[i + 2]))
            elif ANY_MARKER.match(line):
                problems.append(f"{where}: a marker this check cannot read: {line}")
    for ex in exercises.values():
        if not ex.changes:
            problems.append(f"{ex.checks[0][0]}: checks after {ex.name}, but no change of that name is declared")
        elif not ex.checks:
            problems.append(f"{ex.changes[0][0]}: change {ex.name} has no fails/passes/output marker: nothing checks it")
    return exercises, problems


def tracked_files():
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"{PREFIX}: git ls-files failed, so which files make the tree is unknown: {done.stderr.decode().strip()}")
    out = done.stdout
    files = [f for f in out.decode().split("\0") if f and f not in NOT_COPIED]
    return [f for f in files if (ROOT / f).is_file()]


def sync_scratch():
    """The scratch copy made equal to the tracked files of the working
    tree; a file is written only if it differs (with a fresh mtime, so
    cargo rebuilds what depends on it), and files no longer tracked go."""
    files = tracked_files()
    for f in files:
        source, copy = ROOT / f, SCRATCH / f
        data = source.read_bytes()
        if not copy.is_file() or copy.read_bytes() != data:
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data)
        mode = source.stat().st_mode & 0o777
        if copy.stat().st_mode & 0o777 != mode:
            copy.chmod(mode)
    keep = set(files)
    for path in SCRATCH.rglob("*"):
        rel = path.relative_to(SCRATCH)
        if rel.parts[0] in ("target", ".lock") or not path.is_file():
            continue
        if str(rel) not in keep:
            path.unlink()


def apply_change(ex):
    """Makes every change of `ex` in the scratch copy; returns the files'
    texts before (to put back) and why it could not, if it could not."""
    before = {}
    for where, path, old, new in ex.changes:
        file = SCRATCH / path
        if not file.is_file():
            return before, f"{where}: {path} is not a file of the tree"
        text = file.read_text()
        before.setdefault(file, text)
        lines = text.split("\n")
        at = [i for i in range(len(lines) - len(old) + 1) if lines[i : i + len(old)] == old]
        if len(at) != 1:
            found = "not found" if not at else f"found {len(at)} times (lines {', '.join(str(i + 1) for i in at)})"
            return before, f"{where}: the old text is {found} in {path}; first line: {old[0].strip()!r}"
        i = at[0]
        file.write_text("\n".join(lines[:i] + new + lines[i + len(old) :]))
    return before, None


def restore(before):
    for file, text in before.items():
        file.write_text(text)


def environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYMMU_")}
    env["CARGO_TARGET_DIR"] = str(TARGET)
    return env


def run(command, log):
    """Runs `command` in the scratch copy; its exit code and its output
    (stdout and stderr as they came), which is also written to `log`."""
    done = subprocess.run(
        ["bash", "-c", command], cwd=SCRATCH, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    text = done.stdout.decode(errors="replace").replace("\r", "")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {command}\n{text}\nexit {done.returncode}\n")
    return done.returncode, text.splitlines()


def failing_tests(lines):
    """The tests a run reports failed (`---- NAME ----`), and the test a run
    stopped in before it could say (a fault, a hang, QEMU killed): one
    whose `test NAME ... ` line had no ok or FAILED after it when the next
    image started or the output ended."""
    failing, running = set(), None
    for line in lines:
        header = re.match(r"^---- (.+) ----$", line)
        if header:
            failing.add(header.group(1))
        test = re.match(r"^test (\S+) \.\.\. (.*)$", line)
        if test:
            running, line = test.group(1), test.group(2)
        elif line.startswith("     Running ") and running:
            failing.add(running)
            running = None
        if running and (line.strip() in ("ok", "FAILED") or line.endswith((" ok", " FAILED"))):
            running = None
    if running:
        failing.add(running)
    return failing


def check_exercise(ex):
    before, why = apply_change(ex)
    paths = ", ".join(sorted({path for _, path, _, _ in ex.changes}))
    try:
        report(f"{ex.name}: the change applies to {paths}", why)
        if why:
            return
        results = {}
        for n, command in enumerate(ex.commands(), 1):
            log = LOGS / f"{ex.name}.{n}.txt"
            results[command] = run(command, log) + (log.relative_to(ROOT),)
        for where, kind, command, expected in ex.checks:
            rc, out, log = results[command]
            if kind == "passes":
                report(f"{ex.name}: $ {command} passes ({where})", None if rc == 0 else f"exit {rc} (output: {log})", out)
            elif kind == "fails":
                got, want = failing_tests(out), set(expected)
                label = f"{ex.name}: $ {command} fails exactly the {len(want)} named ({where})"
                why = []
                if rc == 0:
                    why.append("it passed")
                if want - got:
                    why.append(f"did not fail: {' '.join(sorted(want - got))}")
                if got - want:
                    why.append(f"failed too: {' '.join(sorted(got - want))}")
                if rc != 0 and not got:
                    why.append(f"exit {rc} and no test failed")
                report(label, f"{'; '.join(why)} (output: {log})" if why else None, out)
            else:
                missing = find_in_order(normalise_output(expected, command), normalise_output(out, command))
                report(f"{ex.name}: {where} is what `{command}` prints", missing and f"{missing} (output: {log})", out)
    finally:
        restore(before)


def main(args):
    exercises, problems = read_docs()
    if args == ["--list"]:
        for ex in exercises.values():
            print(f"{ex.name}: {', '.join(where for where, _, _, _ in ex.changes)}")
        return 0
    if any(a.startswith("-") for a in args):
        print(f"usage: {sys.argv[0]} [--list | NAME...]", file=sys.stderr)
        return 2
    unknown = [a for a in args if a not in exercises]
    if unknown:
        print(f"{PREFIX}: no change named {', '.join(unknown)}; the changes are: {' '.join(exercises)}", file=sys.stderr)
        return 2
    report("markers in docs/*.md", "; ".join(problems) if problems else None)
    chosen = [exercises[a] for a in args] if args else list(exercises.values())
    start = time.monotonic()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with open(SCRATCH / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{PREFIX}: another run uses {SCRATCH.relative_to(ROOT)}; waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        sync_scratch()
        for ex in chosen:
            check_exercise(ex)
    minutes, seconds = divmod(int(time.monotonic() - start), 60)
    print(f"{PREFIX}: {passed} passed, {failed} failed ({len(chosen)} changes, {minutes}m{seconds:02d}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
