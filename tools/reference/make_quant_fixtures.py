#!/usr/bin/env python3
"""Makes tests/golden/kernels/quant_fixtures.json from gguf-py (an implementation independent of ours).

  pip install gguf numpy; python3 tools/reference/make_quant_fixtures.py

For every block type: a few random blocks (raw bytes, with finite fp16 scale fields) and gguf.quants.dequantize's
float32 values (as hex of the IEEE bits, so the comparison can be exact). For the types gguf-py quantizes
(f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1): input floats and gguf-py's bytes.
"""
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES
from gguf import quants

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "golden", "kernels", "quant_fixtures.json")

# Offsets of the fp16 scale fields inside each block (types.h / ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
NAMES = {T.F32: "f32", T.F16: "f16", T.BF16: "bf16", T.Q4_0: "q4_0", T.Q4_1: "q4_1", T.Q5_0: "q5_0",
         T.Q5_1: "q5_1", T.Q8_0: "q8_0", T.Q2_K: "q2_K", T.Q3_K: "q3_K", T.Q4_K: "q4_K", T.Q5_K: "q5_K",
         T.Q6_K: "q6_K"}


def f32_hex(a):
    return np.asarray(a, dtype="<f4").tobytes().hex()


def random_raw(rng, t, n_blocks):
    block, size = GGML_QUANT_SIZES[t]
    if t == T.F32:
        return rng.standard_normal(n_blocks * 64).astype("<f4").tobytes()
    if t == T.F16:
        return (rng.standard_normal(n_blocks * 64) * 10).astype("<f2").tobytes()
    if t == T.BF16:
        bits = (rng.standard_normal(n_blocks * 64).astype("<f4").view("<u4") >> 16).astype("<u2")
        return bits.tobytes()
    raw = bytearray(rng.integers(0, 256, n_blocks * size, dtype=np.uint8).tobytes())
    for b in range(n_blocks):
        for off in F16_FIELDS[t]:
            v = np.float16(rng.uniform(-0.05, 0.05) if off == 0 or t in (T.Q6_K, T.Q3_K) else rng.uniform(0, 0.05))
            raw[b * size + off:b * size + off + 2] = v.tobytes()
    return bytes(raw)


def dequant_cases(rng):
    out = {}
    for t in NAMES:
        block, size = GGML_QUANT_SIZES[t]
        n_blocks = 3 if block > 1 else 1
        raw = random_raw(rng, t, n_blocks)
        vals = quants.dequantize(np.frombuffer(raw, dtype=np.uint8), t).astype(np.float32).reshape(-1)
        out[NAMES[t]] = {"n": int(vals.size), "raw": raw.hex(), "values": f32_hex(vals)}
    return out


def quant_inputs(rng):
    x = [rng.standard_normal(64) * 0.1,               # ordinary weights
         np.abs(rng.standard_normal(32)) + 0.5,       # all positive (min > 0)
         np.zeros(32),                                # all zero (d = 0)
         np.array([1.0, -1.0] * 16),                  # absmax ties
         rng.standard_normal(32) * 1000.0,            # large
         rng.uniform(-1e-3, 1e-3, 64)]                # small
    return np.concatenate(x).astype(np.float32)


def quant_cases(rng):
    x = quant_inputs(rng)
    out = {}
    for t in (T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        q = quants.quantize(x.reshape(1, -1), t)
        raw = np.asarray(q).view(np.uint8).tobytes()
        out[NAMES[t]] = {"n": int(x.size), "input": f32_hex(x), "raw": raw.hex()}
    return out


def main():
    rng = np.random.default_rng(1234)
    data = {"generator": "tools/reference/make_quant_fixtures.py", "gguf_version": _gguf_version(),
            "dequantize": dequant_cases(rng), "quantize": quant_cases(rng)}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)", file=sys.stderr)


def _gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # noqa: BLE001 - version is informational only
        return "unknown"


if __name__ == "__main__":
    main()
