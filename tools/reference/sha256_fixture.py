#!/usr/bin/env python3
"""Writes tests/golden/base/sha256.json: hashlib digests of buffers the C++ test regenerates.

The 1 MiB buffer is the little-endian byte stream of splitmix64(seed=12345) outputs (same generator as
src/base/rng.h), so the test needs no large fixture file, only the digests made by an independent SHA-256.
"""
import hashlib, json, os, struct, sys

M = (1 << 64) - 1

def splitmix64_stream(seed, nwords):
    s = seed
    out = bytearray()
    for _ in range(nwords):
        s = (s + 0x9E3779B97F4A7C15) & M
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        out += struct.pack("<Q", z ^ (z >> 31))
    return bytes(out)

def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    buf = splitmix64_stream(12345, (1 << 20) // 8)
    cases = {
        "seed": 12345,
        "random_1mib": hashlib.sha256(buf).hexdigest(),
        # Prefix lengths around the 55/56/64-byte padding boundaries.
        "prefixes": {str(n): hashlib.sha256(buf[:n]).hexdigest()
                     for n in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 4097]},
    }
    out = os.path.join(root, "tests/golden/base/sha256.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", out, file=sys.stderr)

if __name__ == "__main__":
    main()
