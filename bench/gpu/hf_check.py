#!/usr/bin/env python3
"""Compare the CUDA decoder's logits (dumped by citadel_gpu_bench) with HF transformers' Qwen2ForCausalLM built
on the device with the same synthetic weights (the hash recipe of src/runtime/cuda_decoder.h, reimplemented in torch
integer arithmetic: synth_hash.py). Usage: hf_check.py DUMP_DIR OUT_JSON. Prints and writes top-1 agreement and NMSE."""
import json, math, os, sys, time
import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from synth_hash import fill, hash_u32, pow2_near

D, L, H, KV, DH, F, V = 3584, 28, 28, 4, 128, 18944, 152064
SEED = 42
EMBED, OUT_NORM, OUTPUT, ATTN_NORM, WQ, WK, WV, BQ, BK, BV, WO, FFN_NORM, WGATE, WUP, WDOWN = range(15)


def scale_of(kind, cols):
    if kind == EMBED:
        return 1.0
    if kind in (OUT_NORM, ATTN_NORM, FFN_NORM):
        return 0.125
    if kind in (BQ, BK, BV):
        return 0.0625
    a = math.sqrt(3.0 / cols) * (4.0 if kind == OUTPUT else 1.0)
    if kind in (WO, WDOWN):  # residual-stream projections: 1 / sqrt(2 * n_layers), as in synth_scale()
        a /= math.sqrt(2.0 * L)
    return pow2_near(a)


def synth(kind, layer, shape, dev):
    glob = kind in (EMBED, OUTPUT, OUT_NORM)
    tseed = hash_u32(SEED, ((1023 if glob else layer) * 32 + kind))
    cols = shape[1] if len(shape) == 2 else 1
    off = 1.0 if kind in (OUT_NORM, ATTN_NORM, FFN_NORM) else 0.0
    out = fill(tseed, int(np.prod(shape)), scale_of(kind, cols), off, dev)
    return out.view(*shape)


def main():
    dump, out_json = sys.argv[1], sys.argv[2]
    dev = "cuda"
    t0 = time.time()
    cfg = Qwen2Config(hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H,
                      num_key_value_heads=KV, vocab_size=V, rope_theta=10000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, max_position_embeddings=4096)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(dev):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    sd = {}
    sd["model.embed_tokens.weight"] = synth(EMBED, 0, (V, D), dev)
    sd["model.norm.weight"] = synth(OUT_NORM, 0, (D,), dev)
    sd["lm_head.weight"] = synth(OUTPUT, 0, (V, D), dev)
    for l in range(L):
        p = f"model.layers.{l}."
        sd[p + "input_layernorm.weight"] = synth(ATTN_NORM, l, (D,), dev)
        sd[p + "self_attn.q_proj.weight"] = synth(WQ, l, (H * DH, D), dev)
        sd[p + "self_attn.k_proj.weight"] = synth(WK, l, (KV * DH, D), dev)
        sd[p + "self_attn.v_proj.weight"] = synth(WV, l, (KV * DH, D), dev)
        sd[p + "self_attn.q_proj.bias"] = synth(BQ, l, (H * DH,), dev)
        sd[p + "self_attn.k_proj.bias"] = synth(BK, l, (KV * DH,), dev)
        sd[p + "self_attn.v_proj.bias"] = synth(BV, l, (KV * DH,), dev)
        sd[p + "self_attn.o_proj.weight"] = synth(WO, l, (D, H * DH), dev)
        sd[p + "post_attention_layernorm.weight"] = synth(FFN_NORM, l, (D,), dev)
        sd[p + "mlp.gate_proj.weight"] = synth(WGATE, l, (F, D), dev)
        sd[p + "mlp.up_proj.weight"] = synth(WUP, l, (F, D), dev)
        sd[p + "mlp.down_proj.weight"] = synth(WDOWN, l, (D, F), dev)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    assert not missing and not unexpected, (missing, unexpected)
    del sd
    model.eval()
    # .to(bfloat16) above also rounded the rotary inverse frequencies (a buffer) to bf16, which HF's own loading
    # (from_pretrained) never does: put back the fp32 values, theta^(-2i/d), so both runs rotate as the model does.
    inv = 1.0 / (10000.0 ** (torch.arange(0, DH, 2, dtype=torch.int64, device=dev).float() / DH))
    n_rot = 0
    for m in model.modules():
        for name in ("inv_freq", "original_inv_freq"):
            if isinstance(getattr(m, name, None), torch.Tensor):
                setattr(m, name, inv.clone())
                n_rot += 1
    assert n_rot > 0, "no rotary inv_freq buffer found"
    toks = np.fromfile(f"{dump}/tokens.bin", dtype=np.int32)
    ours = np.fromfile(f"{dump}/logits.bin", dtype=np.float32).reshape(len(toks), V)
    ids = torch.tensor(toks, dtype=torch.int64, device=dev)[None]
    with torch.no_grad():
        ref16 = model(ids).logits[0].float().cpu().numpy()
        model = model.float()  # fp32 reference from the same bf16 weights (HF bf16 rounds activations every op)
        for m in model.modules():  # .float() leaves the fp32 inv_freq as it is; re-assert it for clarity
            if isinstance(getattr(m, "inv_freq", None), torch.Tensor):
                assert m.inv_freq.dtype == torch.float32
        ref32 = model(ids).logits[0].float().cpu().numpy()
    res = {"hf_positions": int(len(toks)), "hf_logits_std": float(ref32.std())}
    for tag, ref in (("", ref32), ("_vs_hf_bf16", ref16)):
        top = ref.argmax(-1) == ours.argmax(-1)
        res["hf_top1_agreement" + tag] = float(np.mean(top))
        res["hf_top1_agreement_prefill" + tag] = float(np.mean(top[:128]))
        res["hf_top1_agreement_decode" + tag] = float(np.mean(top[128:]))
        res["hf_logits_nmse" + tag] = float(np.sum((ours.astype(np.float64) - ref) ** 2) /
                                            np.sum(ref.astype(np.float64) ** 2))
    # The fp32-activation paths on the same tokens: f32 weights (CudaWeightFormat::kF32), and the bf16 weights with
    # f32_activations; then the quantised formats (weights requantised from the same bf16 values: their distance from
    # HF is mostly quantisation error, not arithmetic).
    for name in ("f32", "bf16_f32act", "int8", "int4", "fp8"):
        if not os.path.exists(f"{dump}/{name}/logits.bin"):
            continue
        o = np.fromfile(f"{dump}/{name}/logits.bin", dtype=np.float32).reshape(len(toks), V)
        top = ref32.argmax(-1) == o.argmax(-1)
        res[f"hf_{name}_top1_agreement"] = float(np.mean(top))
        res[f"hf_{name}_top1_agreement_prefill"] = float(np.mean(top[:128]))
        res[f"hf_{name}_top1_agreement_decode"] = float(np.mean(top[128:]))
        res[f"hf_{name}_logits_nmse"] = float(np.sum((o.astype(np.float64) - ref32) ** 2) /
                                            np.sum(ref32.astype(np.float64) ** 2))
    res["hf_bf16_vs_fp32_top1"] = float(np.mean(ref16.argmax(-1) == ref32.argmax(-1)))
    res["hf_bf16_vs_fp32_nmse"] = float(np.sum((ref16.astype(np.float64) - ref32) ** 2) /
                                        np.sum(ref32.astype(np.float64) ** 2))
    srt = np.sort(ref32, axis=-1)
    res["hf_median_top1_margin"] = float(np.median(srt[:, -1] - srt[:, -2]))
    res["hf_check_seconds"] = time.time() - t0
    print(json.dumps(res, indent=1))
    with open(out_json, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
