#!/usr/bin/env python3
"""Checks that the #include lines under src/ follow the module arrows of docs/ARCHITECTURE.md.

The document is the single source of truth; this script only reads it:
  - the module table: rows "| `src/<m>` | what | deps |", deps a comma list of module names (a parenthesised note
    after a name is ignored, "—" is none) or backticked header paths (`kernels/quant/types.h`: that one header only);
  - the bullet starting "- Engine level and below:": the backticked modules that include no third-party library
    listed in THIRD_PARTY below;
  - the bullet starting "- Known exceptions": backticked file paths, each followed by the library it may still
    include in parentheses, e.g. `src/chat/jinja_value.h` (nlohmann).

Rules: an #include "x/..." in src/<m>/ needs x == m, or x reachable from m through the deps (arrows are transitive),
or the exact header listed as a file dependency of m or of a module m reaches. A quoted include without a module
prefix must resolve next to the including file. Every folder under src/ must have a row. Only src/ is scanned.

Exit status 0 when clean; 1 with one line per violation ("file:line: ..."); 2 when the document cannot be parsed.
Usage: tools/check_includes.py [--root DIR]
"""
import argparse
import os
import re
import sys

# Library name -> include prefixes that identify it.
THIRD_PARTY = {
    "Boost": ("boost/",),
    "OpenSSL": ("openssl/",),
    "SQLite": ("sqlite3.h", "sqlite3ext.h"),
    "libpq": ("libpq-fe.h", "libpq/", "postgresql/", "pg_config"),
    "nlohmann": ("nlohmann/",),
    "libyaml": ("yaml.h",),
}
SOURCE_EXT = (".h", ".hpp", ".cc", ".cpp", ".cu", ".cuh", ".inc")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')
ROW_RE = re.compile(r"^\|\s*`src/([A-Za-z0-9_]+)`\s*\|.*\|\s*([^|]*?)\s*\|\s*$")


class DocError(Exception):
    pass


def parse_doc(path):
    """Returns (deps: {module: (set of modules, set of headers)}, clean: set, exceptions: {file: set(lib)})."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    deps = {}
    for line in lines:
        m = ROW_RE.match(line)
        if not m:
            continue
        module, cell = m.group(1), m.group(2)
        mods, files = set(), set()
        cell = re.sub(r"\([^)]*\)", "", cell)  # notes such as "(OpenSSL)"
        for item in (x.strip() for x in cell.split(",")):
            if not item or item in ("—", "-"):
                continue
            if item.startswith("`") and item.endswith("`"):
                files.add(item.strip("`"))
            elif re.fullmatch(r"[A-Za-z0-9_]+", item):
                mods.add(item)
            else:
                raise DocError(f"{path}: cannot read dependency {item!r} of src/{module}")
        deps[module] = (mods, files)
    if not deps:
        raise DocError(f"{path}: no module table rows (| `src/x` | ... | deps |)")
    for module, (mods, files) in deps.items():
        for d in mods:
            if d not in deps:
                raise DocError(f"{path}: src/{module} depends on {d!r}, which has no row")
        for h in files:
            if h.split("/")[0] not in deps:
                raise DocError(f"{path}: src/{module} depends on header {h!r} of a module without a row")

    def bullet(prefix):
        """The text of the bullet that starts with prefix, continuation lines joined."""
        for i, line in enumerate(lines):
            if line.startswith(prefix):
                text = [line]
                for nxt in lines[i + 1:]:
                    if not nxt.startswith("  ") or nxt.lstrip().startswith("- "):
                        break
                    text.append(nxt)
                return " ".join(text)
        raise DocError(f"{path}: no bullet starting {prefix!r}")

    clean = set(re.findall(r"`([A-Za-z0-9_]+)`", bullet("- Engine level and below:")))
    for c in clean:
        if c not in deps:
            raise DocError(f"{path}: engine-level module {c!r} has no row")
    exceptions = {}
    for f, lib in re.findall(r"`(src/[^`]+)`\s*\(([^)]*)\)", bullet("- Known exceptions")):
        names = {x.strip() for x in lib.split(",")}
        for n in names:
            if n not in THIRD_PARTY:
                raise DocError(f"{path}: exception for {f} names unknown library {n!r}")
        exceptions.setdefault(f, set()).update(names)
    return deps, clean, exceptions


def reachable(deps, module):
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(deps[m][0])
    return seen


def third_party(target):
    for lib, prefixes in THIRD_PARTY.items():
        if any(target == p or target.startswith(p) for p in prefixes):
            return lib
    return None


def check(root, doc):
    deps, clean, exceptions = parse_doc(doc)
    src = os.path.join(root, "src")
    errors = []
    for module in sorted(os.listdir(src)):
        if not os.path.isdir(os.path.join(src, module)):
            continue
        if module not in deps:
            errors.append(f"src/{module}: folder has no row in the module table of {os.path.relpath(doc, root)}")
            continue
        allowed = reachable(deps, module)
        allowed_files = set().union(*(deps[m][1] for m in allowed))
        for dirpath, _, names in os.walk(os.path.join(src, module)):
            for name in sorted(names):
                if not name.endswith(SOURCE_EXT):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE_RE.match(line)
                        if not m:
                            continue
                        quote, target = m.groups()
                        lib = third_party(target)
                        if lib:
                            if module in clean and lib not in exceptions.get(rel, ()):
                                errors.append(f"{rel}:{lineno}: src/{module} is engine level and may not include "
                                              f"{lib} (<{target}>)")
                            continue
                        if quote != '"':
                            continue
                        first = target.split("/")[0]
                        if "/" in target and first in deps:
                            if first in allowed or target in allowed_files:
                                continue
                            errors.append(f"{rel}:{lineno}: forbidden arrow src/{module} -> src/{first} "
                                          f"(\"{target}\"; src/{module} depends on "
                                          f"{', '.join(sorted(allowed - {module})) or 'nothing'})")
                            continue
                        local = os.path.normpath(os.path.join(dirpath, target))
                        if os.path.exists(local):
                            owner = os.path.relpath(local, src).split(os.sep)[0]
                            if owner != module and owner not in allowed:
                                errors.append(f"{rel}:{lineno}: forbidden arrow src/{module} -> src/{owner} "
                                              f"(\"{target}\")")
                            continue
                        errors.append(f"{rel}:{lineno}: \"{target}\" is neither <module>/... nor next to the file")
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--doc", help="default: <root>/docs/ARCHITECTURE.md")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    doc = args.doc or os.path.join(root, "docs", "ARCHITECTURE.md")
    try:
        errors = check(root, doc)
    except DocError as e:
        print(f"check_includes: {e}", file=sys.stderr)
        return 2
    for e in errors:
        print(e)
    if errors:
        print(f"check_includes: {len(errors)} violation(s) of the arrows in {os.path.relpath(doc, root)}")
        return 1
    print("check_includes: every #include under src/ follows docs/ARCHITECTURE.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
