#!/usr/bin/env python3
"""How many of the library's lines the host property tests compile.

The library: every .rs file under kernel/ except the boot binary
(kernel/cmd/). Compiled by the host: every kernel file the host crate
(tests/host/props) reads, as rustc's dep-info for the crate lists them
(the files its #[path] attributes name, and the modules those declare).
Builds the crate's library first (cargo build, from outside the
checkout, as scripts/test runs it), then prints each compiled file's
lines and the total against the library's.

    tests/host/props_lines.py          # the table and the total
    tests/host/props_lines.py --total  # "compiled library percent"
"""
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.path.join(ROOT, "target", "host-props")


def lines(path):
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def main():
    manifest = os.path.join(ROOT, "tests", "host", "props", "Cargo.toml")
    subprocess.run(
        ["cargo", "+lazymmu", "build", "--quiet", "--lib", "--manifest-path", manifest],
        cwd="/", env=dict(os.environ, CARGO_TARGET_DIR=TARGET), check=True)
    deps = glob.glob(os.path.join(TARGET, "debug", "deps", "lazymmu_props-*.d"))
    if not deps:
        sys.exit("props_lines: no dep-info for the host crate")
    dep = max(deps, key=os.path.getmtime)
    props_src = os.path.join(ROOT, "tests", "host", "props", "src")
    compiled = set()
    with open(dep) as f:
        for line in f:
            target, _, _ = line.partition(":")
            path = os.path.normpath(os.path.join(props_src, "..", target.strip()))
            rel = os.path.relpath(path, ROOT)
            if rel.startswith("kernel/") and rel.endswith(".rs") and not rel.startswith("kernel/cmd/"):
                compiled.add(rel)
    library = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "kernel")):
        rel_dir = os.path.relpath(dirpath, ROOT)
        if rel_dir == "kernel/cmd" or rel_dir.startswith("kernel/cmd/"):
            continue
        for name in files:
            if name.endswith(".rs"):
                library[os.path.join(rel_dir, name)] = lines(os.path.join(dirpath, name))
    total = sum(library.values())
    host = sum(library[f] for f in compiled)
    if "--total" not in sys.argv:
        for f in sorted(compiled):
            print(f"{library[f]:6} {f}")
    print(f"{host} of {total} library lines compiled by the host tests ({100 * host / total:.1f}%)")


if __name__ == "__main__":
    main()
