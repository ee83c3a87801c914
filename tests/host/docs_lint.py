#!/usr/bin/env python3
"""Reads docs/*.md for tests/host/docs.sh.

  docs_lint.py commands   prints every command the docs name, one per line,
                          as the check will run it
  docs_lint.py lint       checks chapter headings, "Reproduce:" lines,
                          figures, every bench number against the CSV, and
                          that the README's "Where things are" names every
                          file of kernel/ once, and nothing else; prints one
                          "ok"/"FAILED" line per chapter and one for the tree
  docs_lint.py sync       rewrites every bench number from the CSV
                          (scripts/bench does this after a full run)

A command is a line of a ```sh block, or the backticked command of a
"Reproduce:" line, that starts with `cargo`, `scripts/` or VAR=value.
`scripts/test` is not run (it is what runs this check), and the bench
runs as `--quick` (the full bench is for humans; its numbers are checked
against the CSV it wrote instead).
"""
import csv
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BAD_INPUT_DOC = DOCS / "bad-input.md"
BAD_INPUT_TEST = ROOT / "tests" / "bad_input.rs"
CSV = DOCS / "bench" / "results.csv"
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:cargo\s|scripts/)")
BENCH = re.compile(r"<!--bench:([^/]+)/([^/]+)/(\d+)/(\w+)-->(.*?)<!--/bench-->")
FIGURE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def chapters():
    return sorted(DOCS.glob("[0-9][0-9]-*.md"))


def commands_in(text):
    found, in_sh = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_sh = line.strip() in ("```sh", "```bash") and not in_sh
            continue
        if in_sh and COMMAND.match(line.strip()):
            found.append(line.strip())
    for m in re.finditer(r"^Reproduce:.*?`([^`]+)`", text, re.M):
        if COMMAND.match(m.group(1)):
            found.append(m.group(1).strip())
    return found


def as_run(command):
    if re.search(r"(^|\s)scripts/test(\s|$)", command):
        return None
    if re.search(r"(^|\s)scripts/bench$", command) or re.search(r"cargo run( \S+)* -- bench$", command):
        return command + " --quick"
    return command


def commands():
    seen = []
    for path in [DOCS / "README.md", BAD_INPUT_DOC, *chapters()]:
        if path.exists():
            for c in commands_in(path.read_text()):
                run = as_run(c)
                if run and run not in seen:
                    seen.append(run)
    print("\n".join(seen))


def lint():
    rows = {}
    if CSV.exists():
        with CSV.open() as f:
            for r in csv.DictReader(f):
                rows[(r["workload"], r["backend"], r["n"])] = r
    bad = 0
    files = chapters()
    if [int(p.name[:2]) for p in files] != list(range(1, 10)):
        print(f"docs: expected chapters 01..09, found {[p.name for p in files]} ... FAILED")
        bad += 1
    for path in files:
        number = int(path.name[:2])
        text = path.read_text()
        why = []
        if not text.startswith(f"# {number}. "):
            why.append(f'does not start with "# {number}. "')
        if not re.search(r"^Reproduce:.*`[^`]+`", text, re.M):
            why.append('no "Reproduce: `COMMAND`" line')
        for target in FIGURE.findall(text):
            if not (path.parent / target).exists():
                why.append(f"figure {target} does not exist")
        for workload, backend, n, column, value in BENCH.findall(text):
            row = rows.get((workload, backend, n))
            if row is None:
                why.append(f"bench {workload}/{backend}/{n}: no such row in {CSV.name}")
            elif column not in row:
                why.append(f"bench {workload}/{backend}/{n}: no column {column}")
            elif row[column] != value:
                why.append(f"bench {workload}/{backend}/{n}/{column}: the docs say {value}, the CSV {row[column]}")
        print(f"docs {path.name} ... " + ("ok" if not why else "FAILED: " + "; ".join(why)))
        bad += bool(why)
    # The bad-input table and the test's cases: the same rows.
    documented = re.findall(r"^\| `(.+?)` \|", BAD_INPUT_DOC.read_text(), re.M)
    tested = re.findall(r'case\(\s*"([^"]+)"', BAD_INPUT_TEST.read_text())
    why = []
    if sorted(documented) != sorted(tested):
        why.append(f"rows only in the docs: {sorted(set(documented) - set(tested))}; only in the test: {sorted(set(tested) - set(documented))}")
    if len(set(tested)) != len(tested):
        why.append("a case label is used twice")
    print(f"docs {BAD_INPUT_DOC.name} ({len(tested)} rows) ... " + ("ok" if not why else "FAILED: " + "; ".join(why)))
    bad += bool(why)
    return bad + tree()


def tree():
    """The README's "Where things are": one line per source file (and
    package manifest) of kernel/, by its path under the directory lines
    above it, and no file that is not there."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^## Where things are\n.*?^```\n(.*?)^```", readme, re.M | re.S)
    if block is None:
        print('docs README.md "Where things are" ... FAILED: no tree block')
        return 1
    named, dirs = [], []
    for line in block.group(1).splitlines():
        indent = len(line) - len(line.lstrip())
        name = line.split()[0] if line.strip() else ""
        depth = indent // 2
        dirs = dirs[:depth]
        if name.endswith("/"):
            dirs.append(name)
        elif name:
            named.append("".join(dirs) + name)
    kernel = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "kernel").rglob("*")
        if p.is_file() and (p.suffix in (".rs", ".s") or p.name == "Cargo.toml")
    )
    listed = [n for n in named if n.startswith("kernel/")]
    why = []
    if sorted(set(listed)) != kernel:
        why.append(f"not listed: {sorted(set(kernel) - set(listed))}; listed, not there: {sorted(set(listed) - set(kernel))}")
    twice = sorted({n for n in listed if listed.count(n) > 1})
    if twice:
        why.append(f"listed twice: {twice}")
    print(f'docs README.md "Where things are" ({len(kernel)} files) ... ' + ("ok" if not why else "FAILED: " + "; ".join(why)))
    return bool(why)


def sync():
    with CSV.open() as f:
        rows = {(r["workload"], r["backend"], r["n"]): r for r in csv.DictReader(f)}
    missing = 0
    for path in chapters():
        text = path.read_text()

        def cell(m):
            nonlocal missing
            row = rows.get((m.group(1), m.group(2), m.group(3)))
            if row is None or m.group(4) not in row:
                missing += 1
                print(f"{path.name}: no CSV cell for {m.group(1)}/{m.group(2)}/{m.group(3)}/{m.group(4)}")
                return m.group(0)
            return f"<!--bench:{m.group(1)}/{m.group(2)}/{m.group(3)}/{m.group(4)}-->{row[m.group(4)]}<!--/bench-->"

        new = BENCH.sub(cell, text)
        if new != text:
            path.write_text(new)
            print(f"docs: updated the bench numbers in {path.name}")
    return missing


if __name__ == "__main__":
    if sys.argv[1:] == ["commands"]:
        commands()
    elif sys.argv[1:] == ["sync"]:
        sys.exit(1 if sync() else 0)
    elif sys.argv[1:] == ["lint"]:
        sys.exit(1 if lint() else 0)
    else:
        sys.exit(f"usage: {sys.argv[0]} commands|lint")
