#!/usr/bin/env python3
"""Self-test of tools/check_includes.py on a small made-up tree: clean includes pass, each kind of violation is
reported with file:line and the arrow, the exception list works, and an unparsable document is refused."""
import os
import subprocess
import sys
import tempfile

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "check_includes.py")

DOC = """| folder | what | depends on |
|---|---|---|
| `src/base` | basics | — |
| `src/kernels` | ops | base |
| `src/model` | recipes | kernels, `engine/contract.h` |
| `src/engine` | loop | base |
| `src/api` | http | model, engine (JSON) |

- Engine level and below: `base`, `kernels`, `model`, `engine` include no third-party library.
- Known exceptions, to be removed:
  `src/model/legacy.cc` (nlohmann).
"""


def run(files, doc=DOC):
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "docs"))
        with open(os.path.join(root, "docs", "ARCHITECTURE.md"), "w") as f:
            f.write(doc)
        for rel, text in files.items():
            p = os.path.join(root, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        r = subprocess.run([sys.executable, TOOL, "--root", root], capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr


BASE = {
    "src/base/status.h": "#pragma once\n#include <vector>\n",
    "src/kernels/ops.h": '#include "base/status.h"\n',
    "src/engine/contract.h": '#include "base/status.h"\n',
    "src/engine/loop.cc": '#include "engine/contract.h"\n#include "local.h"\n',
    "src/engine/local.h": "\n",
    "src/model/recipe.cc": '#include "kernels/ops.h"\n#include "base/status.h"\n#include "engine/contract.h"\n',
    "src/model/legacy.cc": "#include <nlohmann/json.hpp>\n",
    "src/api/routes.cc": '#include "model/x.h"\n#include "engine/loop.h"\n#include <nlohmann/json.hpp>\n'
                         "#include <boost/asio.hpp>\n",
}


def expect(cond, what, out):
    if not cond:
        print(f"FAIL: {what}\n{out}")
        sys.exit(1)


def main():
    rc, out = run(BASE)
    expect(rc == 0, "clean tree passes", out)

    rc, out = run({**BASE, "src/kernels/bad.cu": '#include "base/status.h"\n\n#include "model/recipe.h"\n'})
    expect(rc == 1 and "src/kernels/bad.cu:3: forbidden arrow src/kernels -> src/model" in out,
           "kernels -> model reported with file:line", out)

    rc, out = run({**BASE, "src/engine/bad.h": '#include "kernels/ops.h"\n'})
    expect(rc == 1 and "src/engine/bad.h:1: forbidden arrow src/engine -> src/kernels" in out,
           "engine -> kernels reported", out)

    rc, out = run({**BASE, "src/model/other.h": '#include "engine/loop.h"\n'})
    expect(rc == 1 and "src/model/other.h:1: forbidden arrow src/model -> src/engine" in out,
           "a header dependency allows that header only", out)

    rc, out = run({**BASE, "src/engine/db.cc": "#include <sqlite3.h>\n#include <openssl/evp.h>\n"})
    expect(rc == 1 and "src/engine/db.cc:1:" in out and "SQLite" in out and "src/engine/db.cc:2:" in out
           and "OpenSSL" in out, "third-party includes at engine level reported", out)

    rc, out = run({**BASE, "src/model/new.cc": "#include <nlohmann/json.hpp>\n"})
    expect(rc == 1 and "src/model/new.cc:1:" in out and "nlohmann" in out, "exception is per file", out)

    rc, out = run({**BASE, "src/store/db.cc": "\n"})
    expect(rc == 1 and "src/store: folder has no row" in out, "a folder without a row is reported", out)

    rc, out = run({**BASE, "src/kernels/x.cc": '#include "missing.h"\n'})
    expect(rc == 1 and "src/kernels/x.cc:1:" in out, "an unresolvable quoted include is reported", out)

    rc, out = run(BASE, DOC.replace("| model, engine (JSON) |", "| model, enigne |"))
    expect(rc == 2 and "enigne" in out, "an unknown module in the table is refused", out)
    print("check_includes self-test: ok")


if __name__ == "__main__":
    main()
