#!/usr/bin/env python3
"""Reads docs/*.md for tests/host/docs.sh.

  docs_lint.py commands   prints every command the docs name, one per line,
                          as the check will run it
  docs_lint.py lint       checks chapter headings, "Reproduce:" lines, each
                          chapter's front matter (tl;dr, "You need first:",
                          "Contents:" linking every section, "Sources:"),
                          figures (each exists; each drawn one is shown;
                          every snake_case name in a figure's text is
                          named by the chapter that shows it), every
                          bench number against the CSV, every timing
                          (a number in ns, us or ms) in the prose against
                          the CSV's times, every code
                          excerpt against its file, that every text block
                          names its command, and that the README's "Where
                          things are" names every file of kernel/ once, and
                          nothing else; prints one "ok"/"FAILED" line per
                          chapter and one per other check
  docs_lint.py run        runs every command the docs name (each once)
                          and checks that it exits 0 and that every
                          output block that names it is in what it printed
  docs_lint.py sync       rewrites every bench number from the CSV
                          (scripts/bench does this after a full run)

What the docs quote is checked against the tree:

- A ```rust block is a code excerpt. Its first line names the file and,
  optionally, the items: `// kernel/mm/apply.rs, apply() (comments ours)`.
  The file must exist, every identifier of the items must be in it, and the
  block's lines must be in the file in order: consecutive lines
  consecutive, except across a gap line (`// ...`, alone or followed by a
  description, or `...`). Inside one line `/* ... */` stands for any text.
  Indentation and blank lines do not count. A note in parentheses that
  says "comment" (comments ours, doc comments shortened) makes comments
  not count either, on both sides.
- A ```text block is output. The line before it says which command printed
  it: `<!-- output: cargo run -- demo lazy -->` (checked by `run` on the
  tree as it is), or `<!-- output after CHANGE: COMMAND -->` (the output
  once a change the docs describe is made: checked by
  tests/host/exercises.py). `COMMAND (exits N)`: a command that must exit
  with N (a check that fails on purpose). The block's lines must be in the output in
  order, as above (gap: a line `...`). Before they are compared, both
  sides go through OUTPUT_NORMALISE: what changes from build to build or
  run to run (physical addresses, times, panic line numbers), and the
  OUTPUT_VARY patterns of that command (ptdump's image sizes).
  Anything else (a diagram, a layout) takes a plain ``` fence.

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
OUTPUT_MARKER = re.compile(r"^<!-- output(?: after ([\w-]+))?: (.+?) -->$")
EXCERPT_HEADER = re.compile(r"^// ((?:kernel|tests|scripts)/[\w/.-]+\.(?:rs|s))\b(.*)$")
GAP = re.compile(r"^(?:// \.\.\.|\.\.\.$)")

# What may differ between the output a chapter quotes and a fresh run, and
# nothing else: each pattern is replaced by its placeholder on both sides.
OUTPUT_NORMALISE = [
    # physical addresses (RAM starts at 0x4000_0000 on QEMU virt): frames
    # and tables move whenever the image grows or shrinks
    (re.compile(r"\b0x[4-9a-f][0-9a-f]{7}\b"), "<pa>"),
    # code addresses in the image and offsets into functions (call chains)
    (re.compile(r"\b0xffffffff80[2-9a-f][0-9a-f]{5}\b"), "<image va>"),
    (re.compile(r"\+0x[0-9a-f]+>"), "+<offset>>"),
    # where a table's entry sits in the linear map: the table's frame moves
    (re.compile(r"\(slot 0x[0-9a-f]+\)"), "(slot <va>)"),
    # the test harness's and the demos' times
    (re.compile(r"finished in \d+(?:\.\d+)?s"), "finished in <t>"),
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:ns|us|ms)\b"), "<t>"),
    # a panic's line and column
    (re.compile(r"(\.rs):\d+:\d+"), r"\1:<line>"),
    # how many checks the page-table rules checker made: every store and
    # barrier of the run, which any change to the code moves
    (re.compile(r"pgtable_check: \d+ checks"), "pgtable_check: <n> checks"),
    # free frames: RAM minus the image, its tables and what boot took
    (re.compile(r"\b\d+ free frames"), "<n> free frames"),
]
# What varies with the build for one command's output only: (the commands
# it applies to, pattern, placeholder).
OUTPUT_VARY = [
    # the image's size: where its text, rodata and data end, in the image
    # and in the linear map, and the sizes of those runs
    (re.compile(r"ptdump"), re.compile(r"\b0xffff0000002[0-9a-f]{5}|\b0xffff0000003[0-9a-f]{5}\b"), "<image alias>"),
    (re.compile(r"ptdump"), re.compile(r"^(.*<image .*?) +\d+[KM]\b"), r"\1 <size>"),
    # the software-vs-hardware walk samples pages of the image too
    (re.compile(r"--test page_tables"), re.compile(r"\(\d+ addresses checked\)"), "(<n> addresses checked)"),
]


def fences(text):
    """Every fenced block: (line number of the fence, its language, the
    line before the fence, the block's lines)."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            before = lines[i - 1] if i > 0 else ""
            found.append((i + 1, lines[i][3:].strip(), before, lines[i + 1 : j]))
            i = j
        i += 1
    return found


def chunks(lines):
    """The block split at its gap lines: each chunk is consecutive lines."""
    out, cur = [], []
    for line in lines:
        if GAP.match(line.strip()):
            out.append(cur)
            cur = []
        else:
            cur.append(line)
    out.append(cur)
    return [c for c in out if c]


def line_matches(quoted, actual):
    if "/* ... */" not in quoted:
        return quoted == actual
    pattern = ".*".join(re.escape(part) for part in quoted.split("/* ... */"))
    return re.fullmatch(pattern, actual) is not None


def find_in_order(quoted, source):
    """None if every chunk of `quoted` is consecutive lines of `source`, the
    chunks in order; else why not (the line that could not be matched)."""
    at = 0
    for chunk in chunks(quoted):
        best = (-1, None)
        for start in range(at, len(source) - len(chunk) + 1):
            n = 0
            while n < len(chunk) and line_matches(chunk[n], source[start + n]):
                n += 1
            if n == len(chunk):
                at = start + n
                break
            if n > best[0]:
                best = (n, start)
        else:
            n, start = best
            if start is None or n <= 0:
                return f"not found: {chunk[0].strip()!r}"
            return f"{chunk[n].strip()!r} not found after {chunk[n - 1].strip()!r} (there: {source[start + n].strip()!r})"
    return None


def strip_comment(line):
    """A line without its // comment (not inside a string)."""
    quote = False
    for i, c in enumerate(line):
        if c == '"' and (i == 0 or line[i - 1] != "\\"):
            quote = not quote
        elif not quote and line.startswith("//", i):
            return line[:i]
    return line


def code_lines(lines, without_comments):
    out = []
    for line in lines:
        if GAP.match(line.strip()):
            out.append("// ...")
            continue
        if without_comments:
            line = strip_comment(line)
        line = line.strip()
        if line:
            out.append(line)
    return out


def excerpt_problems(text):
    """Each ```rust block names its file and items and is still there."""
    why = []
    for lineno, lang, _, block in fences(text):
        if lang != "rust":
            continue
        header = EXCERPT_HEADER.match(block[0]) if block else None
        if header is None:
            why.append(f"line {lineno}: a rust block whose first line does not name its file (// kernel/...rs)")
            continue
        file = ROOT / header.group(1)
        if not file.exists():
            why.append(f"line {lineno}: {header.group(1)} does not exist")
            continue
        source = file.read_text()
        rest = header.group(2)
        # the note: from the first " (" on (`name()` is an item)
        note = re.search(r" \((.*)", rest)
        items = rest[: note.start()] if note else rest
        for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", items.split(";")[0]):
            if name not in ("and", "impl", "for", "fn", "the", "of") and not re.search(rf"\b{name}\b", source):
                why.append(f"line {lineno}: {name} is not in {header.group(1)}")
        without_comments = bool(note and "comment" in note.group(1))
        missing = find_in_order(code_lines(block[1:], without_comments), code_lines(source.splitlines(), without_comments))
        if missing:
            why.append(f"line {lineno}: excerpt of {header.group(1)}: {missing}")
    return why


def output_blocks(text):
    """(line, change or None, command, block lines) for each ```text block,
    and the lines of ```text blocks that name no command."""
    found, unnamed = [], []
    for lineno, lang, before, block in fences(text):
        if lang != "text":
            continue
        marker = OUTPUT_MARKER.match(before.strip())
        if marker is None:
            unnamed.append(lineno)
        else:
            found.append((lineno, marker.group(1), marker.group(2), block))
    return found, unnamed


def normalise_output(lines, command=""):
    """`lines` with OUTPUT_NORMALISE applied, and the OUTPUT_VARY patterns
    that apply to `command`."""
    patterns = OUTPUT_NORMALISE + [(p, r) for c, p, r in OUTPUT_VARY if c.search(command)]
    out = []
    for line in lines:
        if line.strip() != "...":
            for pattern, placeholder in patterns:
                line = pattern.sub(placeholder, line)
        out.append(line.rstrip())
    return out


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
    print("\n".join(commands_list()))


def commands_list():
    seen = []
    for path in [DOCS / "README.md", BAD_INPUT_DOC, *chapters()]:
        if path.exists():
            for c in commands_in(path.read_text()):
                run = as_run(c)
                if run and run not in seen:
                    seen.append(run)
    return seen


def slug(heading):
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def front_matter_problems(text):
    """Before its first section a chapter has a **tl;dr**, "You need first:",
    "Contents:" linking every ## section in order, and "Sources:" with the
    Arm ARM sections and the Linux commits or threads it draws on."""
    first = text.find("\n## ")
    top = text[: first if first >= 0 else len(text)]
    why = [f'no "{part}" before the first section' for part in ("**tl;dr**", "You need first:", "Contents:", "Sources:") if part not in top]
    if "Sources:" in top and not (re.search(r"^- Arm ARM", top, re.M) and re.search(r"^- Linux", top, re.M)):
        why.append('"Sources:" lacks an "Arm ARM" or a "Linux" item')
    linked = re.findall(r"^- \[[^\]]+\]\(#([^)]+)\)", top, re.M)
    headings = [slug(h) for h in re.findall(r"^## (.+)$", text, re.M)]
    if "Contents:" in top and linked != headings:
        why.append(f"Contents links {linked}, the sections are {headings}")
    return why


def quoting_problems(text):
    why = excerpt_problems(text)
    _, unnamed = output_blocks(text)
    why += [f"line {n}: a text block names no command (<!-- output: COMMAND --> before it)" for n in unnamed]
    return why


def documents():
    return [ROOT / "README.md", DOCS / "README.md", BAD_INPUT_DOC, *chapters()]


def run(only=()):
    """Runs every command the docs name, each once, and compares the output
    blocks that name it with what it printed (`only`: just the blocks of
    these documents)."""
    import subprocess

    wanted = {}
    if not only:
        for c in commands_list():
            wanted.setdefault(c, [])
    for path in documents():
        if only and path.name not in only:
            continue
        for lineno, change, command, block in output_blocks(path.read_text())[0]:
            if change is None:
                wanted.setdefault(command, []).append((path, lineno, block))
    bad = 0
    for command, blocks in wanted.items():
        # `<!-- output: COMMAND (exits N) -->`: a command that fails on purpose
        exits = re.search(r" \(exits (\d+)\)$", command)
        run_it = command[: exits.start()] if exits else command
        want = int(exits.group(1)) if exits else 0
        done = subprocess.run(["bash", "-c", run_it], cwd=ROOT, capture_output=True, text=True)
        out = normalise_output((done.stdout + done.stderr).splitlines(), command)
        ok = done.returncode == want
        print(f"docs $ {command} ... " + ("ok" if ok else f"FAILED: exit {done.returncode}"), flush=True)
        if not ok:
            print("\n".join(out[-30:]))
        bad += not ok
        for path, lineno, block in blocks:
            why = find_in_order(normalise_output(block, command), out)
            name = f"{path.relative_to(ROOT)}:{lineno}"
            print(f"docs {name} is what `{command}` prints ... " + ("ok" if not why else f"FAILED: {why}"), flush=True)
            bad += bool(why)
    return bad


def lint():
    rows = {}
    if CSV.exists():
        with CSV.open() as f:
            for r in csv.DictReader(f):
                rows[(r["workload"], r["backend"], r["n"])] = r
    bad = 0
    files = chapters()
    if [int(p.name[:2]) for p in files] != list(range(0, 10)):
        print(f"docs: expected chapters 00..09, found {[p.name for p in files]} ... FAILED")
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
        why += timing_problems(text, rows)
        why += figure_label_problems(path, text)
        why += quoting_problems(text)
        why += front_matter_problems(text)
        print(f"docs {path.name} ... " + ("ok" if not why else "FAILED: " + "; ".join(why)))
        bad += bool(why)
    for path in [ROOT / "README.md", DOCS / "README.md", BAD_INPUT_DOC]:
        why = quoting_problems(path.read_text())
        print(f"docs {path.relative_to(ROOT)}: excerpts and outputs named ... " + ("ok" if not why else "FAILED: " + "; ".join(why)))
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
    bad += figures_referenced()
    return bad + tree()


# A time the prose states: a number and a unit of time (`16 ns`, `6.7 us`, `~8 ms`).
TIMING = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)\s?(?:ns|us|µs|ms)\b")
# The CSV columns that hold times.
TIME_COLUMNS = ("ns_per_page", "ns_per_page_min", "ns_per_page_max")


def prose(text):
    """`text` without its fenced blocks (outputs are checked by `run`, code
    by the excerpt rule) and without its bench numbers (checked against
    their cells): what the chapter states in its own words."""
    text = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.M | re.S)
    return BENCH.sub("<bench>", text)


def timing_problems(text, rows):
    """A time stated in the prose must be a cell of the bench's CSV: a
    chapter does not type its timings by hand (they move from run to run
    and host to host); it quotes them as <!--bench:...--> numbers, which
    are checked and rewritten from the CSV."""
    held = {r[c] for r in rows.values() for c in TIME_COLUMNS if r.get(c)}
    why = []
    for lineno, line in enumerate(prose(text).splitlines(), 1):
        for m in TIMING.finditer(line):
            if m.group(1).replace(",", "") not in held:
                why.append(f"line {lineno}: the timing {m.group(0)!r} is in no CSV cell (quote it as <!--bench:...--> from {CSV.name})")
    return why


# A label of a figure that names something of the code: a snake_case name.
CODE_LABEL = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


def figure_labels(svg):
    """The snake_case names in a figure's text."""
    texts = re.findall(r"<text\b[^>]*>(.*?)</text>", svg, re.S)
    return {name for t in texts for name in CODE_LABEL.findall(re.sub(r"<[^>]+>", "", t))}


def figure_label_problems(path, text):
    """Every name a figure shows (`order_gen`, `dsb_on`) is one the chapter
    that shows it names too, where a reader can find what it means."""
    why = []
    for target in FIGURE.findall(text):
        figure = path.parent / target
        if figure.suffix != ".svg" or not figure.exists():
            continue
        for name in sorted(figure_labels(figure.read_text())):
            if not re.search(rf"\b{name}\b", text):
                why.append(f"figure {target}: its label {name} is never named in {path.name}")
    return why


def figures_referenced():
    """Every drawn figure (docs/figures/, made by scripts/diagrams) is shown
    by some chapter."""
    shown = set()
    for path in documents():
        shown |= {pathlib.Path(t).name for t in FIGURE.findall(path.read_text())}
    drawn = sorted(p.name for p in (DOCS / "figures").glob("*.svg"))
    unshown = [name for name in drawn if name not in shown]
    why = f"not shown by any chapter: {unshown}" if unshown else ""
    print(f"docs figures/ ({len(drawn)} diagrams) each shown by a chapter ... " + ("ok" if not why else "FAILED: " + why))
    return bool(why)


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
    elif sys.argv[1:2] == ["run"]:
        sys.exit(1 if run(sys.argv[2:]) else 0)
    elif sys.argv[1:] == ["lint"]:
        sys.exit(1 if lint() else 0)
    else:
        sys.exit(f"usage: {sys.argv[0]} commands|lint|run [DOC.md...]|sync")
