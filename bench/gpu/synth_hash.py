"""The CUDA decoder's synthetic weights in torch (runtime/cuda_decoder.h synth_weight_value), shared by the HF checks
(hf_check.py, deepseek_hf_check.py): element i of a tensor is bf16(u * scale + offset) with u uniform in [-1, 1) from
hash_u32(tensor_seed, i), tensor_seed = hash_u32(seed, layer * 32 + synth_id) (global tensors: layer 1023)."""
import math

import torch

M32 = 0xFFFFFFFF


def hash_u32(seed, idx):
    """ck::dev::hash_u32 on int64 values (python int or tensor): products wrap, the mask keeps the low 32 bits."""
    h = (idx * 0x9E3779B1 + seed) & M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    h ^= h >> 16
    return h


def pow2_near(a):
    """ldexp(1, lround(log2(a))): synth_scale's rounding to a power of two (lround: halves away from zero)."""
    x = math.log2(a)
    return math.ldexp(1.0, int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5)))


def fill(tseed, n, scale, offset, dev):
    """n values of the tensor with seed tseed, as a flat bf16 tensor on dev (in chunks: int64 temporaries)."""
    sc = torch.tensor(scale, dtype=torch.float32, device=dev)
    off = torch.tensor(offset, dtype=torch.float32, device=dev)
    out = torch.empty(n, dtype=torch.bfloat16, device=dev)
    step = 1 << 26
    for s in range(0, n, step):
        idx = torch.arange(s, min(n, s + step), dtype=torch.int64, device=dev)
        u = (hash_u32(tseed, idx) >> 8).to(torch.float32) * (2.0 ** -23) - 1.0
        out[s:s + idx.numel()] = (u * sc + off).to(torch.bfloat16)  # u * sc is exact (sc a power of two)
    return out
