#!/usr/bin/env python3
"""Counts the kernel library's public items: everything a user of the crate
can name by a path from `lazymmu::` (modules, functions, types, traits,
constants, statics, macros, type aliases), each once however many paths
reach it, following `pub use` re-exports (globs included) and not private
modules. Members (methods, variants, fields) are counted apart.

It reads rustdoc's JSON for the library as the dev profile builds it (the
one the tests use, with the debug-only harness):

    tests/host/public_items.py            # the counts
    tests/host/public_items.py --list     # and every path, sorted
"""
import collections
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
JSON = ROOT / "target" / "aarch64-unknown-none-softfloat" / "doc" / "lazymmu.json"


def build():
    done = subprocess.run(
        ["cargo", "rustdoc", "-q", "--lib", "--", "-Z", "unstable-options", "--output-format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(done.stderr)
    return json.loads(JSON.read_text())


def count(doc):
    index = doc["index"]
    named = {}  # id -> (kind, path)
    members = collections.Counter()

    def kind(item):
        return next(iter(item["inner"]))

    def visit(item_id, path):
        item = index.get(str(item_id))
        if item is None or item["crate_id"] != 0:
            return
        k = kind(item)
        if k == "use":
            use = item["inner"]["use"]
            target = index.get(str(use["id"])) if use["id"] is not None else None
            if target is None:
                return
            if use["is_glob"]:
                if kind(target) == "module":
                    for child in target["inner"]["module"]["items"]:
                        visit(child, path + [index[str(child)]["name"] or ""])
                return
            visit(use["id"], path + [use["name"]])
            return
        if str(item_id) in named:
            return
        named[str(item_id)] = (k, "::".join(path))
        inner = item["inner"][k]
        if k == "module":
            for child in inner["items"]:
                visit(child, path + [index[str(child)]["name"] or ""])
        if k in ("struct", "enum", "union", "trait"):
            for impl_id in inner.get("impls", []):
                impl = index[str(impl_id)]["inner"]["impl"]
                if impl["trait"] is None and not impl["is_synthetic"] and impl["blanket_impl"] is None:
                    for m in impl["items"]:
                        if index[str(m)]["visibility"] == "public":
                            members["inherent " + kind(index[str(m)])] += 1
        if k == "enum":
            members["variant"] += len(inner["variants"])
        if k == "struct":
            shape = inner["kind"] if isinstance(inner["kind"], dict) else {}
            fields = shape.get("plain", {}).get("fields", []) + [f for f in shape.get("tuple", []) if f is not None]
            members["field"] += len(fields)
        if k == "trait":
            members["trait item"] += len(inner["items"])

    visit(doc["root"], ["lazymmu"])
    del named[str(doc["root"])]
    return named, members


def main():
    named, members = count(build())
    kinds = collections.Counter(k for k, _ in named.values())
    if "--list" in sys.argv:
        for k, path in sorted(named.values(), key=lambda kp: kp[1]):
            print(f"{k:10} {path}")
    print(f"public items: {len(named)} ({', '.join(f'{n} {k}' for k, n in kinds.most_common())})")
    print(f"members: {sum(members.values())} ({', '.join(f'{n} {k}' for k, n in members.most_common())})")


if __name__ == "__main__":
    main()
