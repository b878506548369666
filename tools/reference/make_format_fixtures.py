#!/usr/bin/env python3
"""Fixtures for tests/format: what the python `gguf` package (an independent reader) sees in real GGUF files.

Usage: python3 tools/reference/make_format_fixtures.py [MODEL_DIR]   (default /tmp/models)
Writes tests/golden/format/<model>.gguf.json: version, alignment, data offset, every tensor (name, PyTorch-order
shape, ggml type id, absolute offset, byte size) and every metadata key (type; scalars in full; arrays by element
type, count and their first and last 3 values). Requires: pip install gguf
"""
import json
import os
import sys

import gguf

MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf"]
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "golden", "format")


def scalar(field, idx):
    v = field.parts[idx]
    t = field.types[-1]
    if t == gguf.GGUFValueType.STRING:
        return bytes(v).decode("utf-8", errors="replace")
    x = v.tolist()[0]
    if t == gguf.GGUFValueType.BOOL:
        return bool(x)
    return x


def describe(field):
    t = field.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        vals = [scalar(field, i) for i in field.data] if len(field.types) == 2 else None
        d = {"type": "array", "elem": field.types[1].name.lower(), "count": len(field.data)}
        if vals is not None:
            d["first"] = vals[:3]
            d["last"] = vals[-3:]
        return d
    return {"type": t.name.lower(), "value": scalar(field, field.data[0])}


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/models"
    os.makedirs(OUT, exist_ok=True)
    for name in MODELS:
        path = os.path.join(model_dir, name)
        r = gguf.GGUFReader(path)
        meta = {k: describe(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}
        tensors = [{"name": t.name, "shape": [int(x) for x in reversed(t.shape.tolist())],
                    "type": int(t.tensor_type), "offset": int(t.data_offset), "nbytes": int(t.n_bytes)}
                   for t in r.tensors]
        doc = {"file": name, "size": os.path.getsize(path), "version": int(r.fields["GGUF.version"].parts[-1][0]),
               "alignment": int(r.alignment), "data_offset": int(r.data_offset), "tensors": tensors, "metadata": meta}
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"{name}: {len(tensors)} tensors, {len(meta)} keys")


if __name__ == "__main__":
    main()
