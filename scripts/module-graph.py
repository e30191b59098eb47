#!/usr/bin/env python3
# Usage: python3 scripts/module-graph.py  (from the repo root) — prints which top-level modules of src/ name which (`crate::x`), then the cycles; exits 1 if there is one.
"""The top-level module graph of the gateway, from the `crate::x` paths in src/.

Test-only code is left out (files declared `#[cfg(test)] mod x;` and inline `#[cfg(test)] mod x {`
blocks, assumed to close their file), and so are comments: a doc link is no dependency.
"""
import os
import re
import sys

ROOT = "src"


def top(path):
    parts = os.path.relpath(path, ROOT).split(os.sep)
    return parts[0][:-3] if len(parts) == 1 else parts[0]


def child_dir(path):
    """Where the files of `mod x;` declared in `path` live."""
    base = os.path.basename(path)
    if base in ("mod.rs", "lib.rs", "main.rs"):
        return os.path.dirname(path)
    return path[:-3]


files = sorted(os.path.join(d, f) for d, _, fs in os.walk(ROOT) for f in fs if f.endswith(".rs"))
test_only = set()
for path in files:
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+)\s*;", open(path).read()):
        d = os.path.join(child_dir(path), m.group(1))
        test_only.update({d + ".rs", os.path.join(d, "mod.rs")})
        test_only.update(f for f in files if f.startswith(d + os.sep))

edges = {}
for path in files:
    if path in test_only:
        continue
    text = open(path).read()
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+[a-z_0-9]+\s*\{", text)[0]
    text = re.sub(r"//[^\n]*", "", text)
    src = top(path)
    for m in re.finditer(r"crate::([a-z_0-9]+)", text):
        if m.group(1) != src:
            edges.setdefault(src, set()).add(m.group(1))

mods = sorted(set(edges) | {x for v in edges.values() for x in v} | {top(f) for f in files})
for m in mods:
    print(m, "->", " ".join(sorted(edges.get(m, ()))))

# Tarjan's strongly connected components: every one with more than a module is a cycle.
index, low, stack, on, cycles = {}, {}, [], set(), []


def scc(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(edges.get(v, ())):
        if w not in index:
            scc(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            cycles.append(sorted(comp))


sys.setrecursionlimit(10000)
for m in mods:
    if m not in index:
        scc(m)
print("cycles:", cycles)
sys.exit(1 if cycles else 0)
