#!/usr/bin/env python3
"""Citadel's deepseek2 path against HF transformers on the same synthetic weights (issue 16's proof).

citadel_deepseek_bench RESULT.json DUMP_DIR runs the DeepSeek-V2-Lite shape on the GPU with weights generated on the
device (runtime/cuda_decoder.h synth_weight_value: element i of role r in layer l is
bf16(uniform(hash(hash(seed, l * 32 + synth_id(r)), i)) * scale(r) + offset(r))) and dumps 256 teacher-forced
positions' logits three ways (one prefill step, 64-token chunks, 128 prefill + 128 decode steps) with the model's
numbers (config.json). This script rebuilds the same weights with the hash in torch int64 arithmetic on the same
device, fills transformers' DeepseekV2ForCausalLM (DeepseekV3ForCausalLM for sigmoid gating) with them, runs the 256
positions in bf16 and in fp32 (HF's fp32 forward of the bf16 weights) and reports, per Citadel run: top-1 agreement,
logits NMSE overall and the median / worst per position.

Our roles -> HF (model/roles.h shapes):
  attn_k_b [H, r, nope], attn_v_b [H, v, r]  -> kv_b_proj [H (nope + v), r]: per head k_b^T rows, then v_b rows
                                               (the inverse of model/arch/deepseek2.cc split_kv_b)
  ffn_{gate,up}_exps [E, Fe, D]              -> mlp.experts.gate_up_proj [E, 2 Fe, D] (gate rows, then up rows),
                                               or mlp.experts.N.{gate,up}_proj.weight (older transformers)
  ffn_down_exps [E, D, Fe]                   -> mlp.experts.down_proj, or mlp.experts.N.down_proj.weight
  ffn_{gate,up,down}_shexp                   -> mlp.shared_experts.{gate,up,down}_proj.weight (2 experts as one FFN)
  ffn_gate_inp, exp_probs_b                  -> mlp.gate.weight, mlp.gate.e_score_correction_bias
  the rest by name (attn_q -> q_proj, attn_kv_a_mqa -> kv_a_proj_with_mqa, ...)

Usage:
  deepseek_hf_check.py DUMP_DIR OUT_JSON [--device cuda] [--no-fp32] [--extra-run cpu_exact=DIR]
  deepseek_hf_check.py --selftest-tiny CITADEL_DEEPSEEK_CPU_REF [OUT_JSON]
The self-test needs no GPU: citadel_deepseek_cpu_ref writes the tiny presets' hash weights (the C++ function itself)
as a GGUF and runs Citadel's CPU exact path; this script's HF model on the CPU in fp32 must give the same logits
(fp32 rounding only), and a deliberately wrong mapping (gate and up swapped) must not.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from synth_hash import fill, hash_u32, pow2_near

# model/roles.cc synth_id of each role this architecture uses.
SYNTH_ID = {"tok_embd": 0, "output_norm": 1, "output": 2, "attn_norm": 3, "wq": 4, "wo": 10, "ffn_norm": 11,
            "gate": 12, "up": 13, "down": 14, "wq_a": 15, "q_a_norm": 16, "wq_b": 17, "wkv_a": 18, "kv_a_norm": 19,
            "wk_b": 20, "wv_b": 21, "gate_inp": 23, "exp_probs_b": 24, "gate_exps": 25, "up_exps": 26,
            "down_exps": 27, "gate_shexp": 28, "up_shexp": 29, "down_shexp": 30}
GLOBAL = {"tok_embd", "output_norm", "output"}
NORMS = {"output_norm", "attn_norm", "ffn_norm", "q_a_norm", "kv_a_norm"}


def role_shape(c, role):
    """model/roles.cc role_shape for the deepseek2 roles."""
    D, H, V = c["dim"], c["n_heads"], c["n_vocab"]
    qk, r = c["qk_nope_dim"] + c["qk_rope_dim"], c["kv_lora_rank"]
    E, Fe, S = c["n_experts"], c["expert_ffn_dim"], c["n_shared"] * c["expert_ffn_dim"]
    return {"tok_embd": (V, D), "output": (V, D), "output_norm": (D,), "attn_norm": (D,), "ffn_norm": (D,),
            "wq": (H * qk, D), "wq_a": (c["q_lora_rank"], D), "q_a_norm": (c["q_lora_rank"],),
            "wq_b": (H * qk, c["q_lora_rank"]), "wkv_a": (r + c["qk_rope_dim"], D), "kv_a_norm": (r,),
            "wk_b": (H, r, c["qk_nope_dim"]), "wv_b": (H, c["v_head_dim"], r), "wo": (D, H * c["v_head_dim"]),
            "gate": (c["ffn_dim"], D), "up": (c["ffn_dim"], D), "down": (D, c["ffn_dim"]), "gate_inp": (E, D),
            "exp_probs_b": (E,), "gate_exps": (E, Fe, D), "up_exps": (E, Fe, D), "down_exps": (E, D, Fe),
            "gate_shexp": (S, D), "up_shexp": (S, D), "down_shexp": (D, S)}[role]


def synth_scale(c, role):
    """runtime/cuda_model_shape.cu synth_scale."""
    if role == "tok_embd":
        return 1.0
    if role in NORMS:
        return 0.125
    a = math.sqrt(3.0 / float(role_shape(c, role)[-1])) * (4.0 if role == "output" else 1.0)
    if role in ("wo", "down"):
        a /= math.sqrt(2.0 * float(c["n_layers"]))
    return pow2_near(a)


def synth(c, role, layer, dev):
    """The role's tensor as the CUDA decoder's init_synthetic fills it (bf16, role_shape)."""
    shape = role_shape(c, role)
    tseed = hash_u32(c["seed"], (1023 if role in GLOBAL else layer) * 32 + SYNTH_ID[role])
    return fill(tseed, int(np.prod(shape)), synth_scale(c, role), 1.0 if role in NORMS else 0.0, dev).view(*shape)


def mscale(c):
    f = c["rope_factor"]
    return 1.0 + c["yarn_log_mul"] * math.log(f) if c["rope_scaling"] == "yarn" and f > 1.0 else 1.0


FLOAT_KEYS = ("rope_theta", "norm_eps", "routed_scale", "rope_factor", "yarn_log_mul")


def hf_config(c):
    import transformers
    c = dict(c, **{k: float(c[k]) for k in FLOAT_KEYS})  # JSON writes 1.0 as 1; strict configs want floats
    v3 = bool(c["sigmoid_gating"])
    cls = transformers.DeepseekV3Config if v3 else transformers.DeepseekV2Config
    kw = dict(vocab_size=c["n_vocab"], hidden_size=c["dim"], intermediate_size=c["ffn_dim"],
              moe_intermediate_size=c["expert_ffn_dim"], num_hidden_layers=c["n_layers"],
              num_attention_heads=c["n_heads"], num_key_value_heads=c["n_heads"], n_shared_experts=c["n_shared"],
              n_routed_experts=c["n_experts"], num_experts_per_tok=c["n_experts_used"],
              first_k_dense_replace=c["n_dense_layers"], routed_scaling_factor=c["routed_scale"],
              kv_lora_rank=c["kv_lora_rank"], q_lora_rank=c["q_lora_rank"] or None,
              qk_rope_head_dim=c["qk_rope_dim"], qk_nope_head_dim=c["qk_nope_dim"], v_head_dim=c["v_head_dim"],
              max_position_embeddings=c["context_len"], rms_norm_eps=c["norm_eps"],
              tie_word_embeddings=bool(c["tied_embeddings"]), attention_bias=False, bos_token_id=None,
              eos_token_id=None, pad_token_id=None, norm_topk_prob=bool(c["norm_topk"]))
    if v3:
        kw.update(n_group=c["n_group"], topk_group=c["topk_group"])
    elif c["n_group"] > 1:
        kw.update(topk_method="group_limited_greedy", n_group=c["n_group"], topk_group=c["topk_group"])
    else:
        kw.update(topk_method="greedy")
    rope = {}
    if c["rope_scaling"] == "yarn":
        m = c["yarn_log_mul"] / 0.1  # mscale == mscale_all_dim: cos/sin unscaled, softmax scale mscale^2/sqrt(qk)
        rope = {"factor": c["rope_factor"], "original_max_position_embeddings": c["rope_original_context"],
                "beta_fast": 32, "beta_slow": 1, "mscale": m, "mscale_all_dim": m}
    elif c["rope_scaling"] != "none":
        raise SystemExit(f"rope scaling {c['rope_scaling']} is not mapped")
    if "rope_parameters" in getattr(cls, "__annotations__", {}) or hasattr(cls(), "rope_parameters"):
        kw["rope_parameters"] = dict(rope, rope_type="yarn" if rope else "default", rope_theta=c["rope_theta"])
    else:  # transformers 4.x spelling
        kw.update(rope_theta=c["rope_theta"], rope_scaling=dict(rope, type="yarn") if rope else None)
    cfg = cls(**kw)
    cfg._attn_implementation = "eager"  # the reference loops, not fused kernels (grouped_mm has no fp32 path)
    cfg._experts_implementation = "eager"
    return cfg


class Weights:
    """HF parameter name -> tensor from the hash; remembers the current layer's expert stacks (per-expert layout)."""

    def __init__(self, c, dev, swap_gate_up=False):
        self.c, self.dev, self.swap = c, dev, swap_gate_up
        self.cache = {}

    def role(self, role, layer):
        key = (role, layer)
        if key not in self.cache:
            if self.cache and next(iter(self.cache))[1] != layer:
                self.cache.clear()
            self.cache[key] = synth(self.c, role, layer, self.dev)
        return self.cache[key]

    def __call__(self, name):
        c = self.c
        top = {"model.embed_tokens.weight": "tok_embd", "model.norm.weight": "output_norm", "lm_head.weight": "output"}
        if name in top:
            return synth(c, top[name], 0, self.dev)
        parts = name.split(".")
        if parts[:2] != ["model", "layers"]:
            raise KeyError(name)
        layer, rest = int(parts[2]), ".".join(parts[3:])
        gate, up = ("up", "gate") if self.swap else ("gate", "up")
        simple = {"input_layernorm.weight": "attn_norm", "post_attention_layernorm.weight": "ffn_norm",
                  "self_attn.q_proj.weight": "wq", "self_attn.q_a_proj.weight": "wq_a",
                  "self_attn.q_a_layernorm.weight": "q_a_norm", "self_attn.q_b_proj.weight": "wq_b",
                  "self_attn.kv_a_proj_with_mqa.weight": "wkv_a", "self_attn.kv_a_layernorm.weight": "kv_a_norm",
                  "self_attn.o_proj.weight": "wo", "mlp.gate_proj.weight": gate, "mlp.up_proj.weight": up,
                  "mlp.down_proj.weight": "down", "mlp.gate.weight": "gate_inp",
                  "mlp.gate.e_score_correction_bias": "exp_probs_b",
                  "mlp.shared_experts.gate_proj.weight": gate + "_shexp",
                  "mlp.shared_experts.up_proj.weight": up + "_shexp",
                  "mlp.shared_experts.down_proj.weight": "down_shexp", "mlp.experts.down_proj": "down_exps"}
        if rest in simple:
            return synth(c, simple[rest], layer, self.dev)
        if rest == "self_attn.kv_b_proj.weight":
            k_b, v_b = synth(c, "wk_b", layer, self.dev), synth(c, "wv_b", layer, self.dev)
            return torch.cat([k_b.transpose(1, 2), v_b], dim=1).reshape(-1, c["kv_lora_rank"])
        if rest == "mlp.experts.gate_up_proj":
            return torch.cat([synth(c, gate + "_exps", layer, self.dev), synth(c, up + "_exps", layer, self.dev)], 1)
        if rest.startswith("mlp.experts.") and len(parts) == 8:  # mlp.experts.N.{gate,up,down}_proj.weight
            e, which = int(parts[5]), parts[6]
            role = {"gate_proj": gate, "up_proj": up, "down_proj": "down"}[which] + "_exps"
            return self.role(role, layer)[e]
        raise KeyError(name)


def build_hf(c, dtype, dev, swap_gate_up=False):
    """transformers' model of config c on dev in dtype, every parameter and buffer from the hash (meta init: nothing
    is initialised twice, no fp32 copy on the host)."""
    import transformers
    cfg = hf_config(c)
    cls = transformers.DeepseekV3ForCausalLM if c["sigmoid_gating"] else transformers.DeepseekV2ForCausalLM
    with torch.device("meta"):
        model = cls(cfg)
    model = model.to(dtype).to_empty(device=dev)
    fill = Weights(c, dev, swap_gate_up)
    done = set()
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("inv_freq"):
                continue
            w = fill(name)
            if tuple(w.shape) != tuple(p.shape):
                raise SystemExit(f"{name}: hash tensor {tuple(w.shape)} vs HF {tuple(p.shape)}")
            p.copy_(w.to(p.dtype))
            done.add(name)
        # RoPE tables in fp32 as transformers computes them (a fresh module on the host; model.to(dtype) would have
        # rounded them to bf16, which HF's own loading never does).
        rot_cls = type(model.model.rotary_emb)
        rot = rot_cls(config=cfg)
        for m in model.modules():
            if isinstance(m, rot_cls):
                m.inv_freq = rot.inv_freq.to(dev)
                m.original_inv_freq = rot.original_inv_freq.to(dev)
                m.attention_scaling = rot.attention_scaling
    attn = model.model.layers[0].self_attn
    want = mscale(c) ** 2 / math.sqrt(c["qk_nope_dim"] + c["qk_rope_dim"])
    if abs(attn.scaling - want) > 1e-6 * want or abs(rot.attention_scaling - 1.0) > 1e-6:
        raise SystemExit(f"transformers did not take the YaRN settings: softmax scale {attn.scaling} (want {want}), "
                         f"cos/sin scale {rot.attention_scaling} (want 1)")
    model.eval()
    return model


def forward(model, toks, dev):
    ids = torch.tensor(toks, dtype=torch.int64, device=dev)[None]
    with torch.no_grad():
        return model(ids, use_cache=False).logits[0].float().cpu().numpy().astype(np.float64)


def compare(ours, ref, decode_from=None):
    """Top-1 agreement and NMSE of ours [N, V] against ref [N, V]."""
    ours = ours.astype(np.float64)
    top = ours.argmax(-1) == ref.argmax(-1)
    err = ((ours - ref) ** 2).sum(-1)
    per_pos = err / (ref ** 2).sum(-1)
    worst = int(per_pos.argmax())
    r = {"top1_agree": int(top.sum()), "positions": int(len(top)), "top1_frac": float(top.mean()),
         "nmse": float(err.sum() / (ref ** 2).sum()), "nmse_median_position": float(np.median(per_pos)),
         "worst_position": worst, "worst_position_nmse": float(per_pos[worst]),
         "max_abs_diff": float(np.abs(ours - ref).max()), "disagree_positions": [int(i) for i in np.where(~top)[0]]}
    if (~top).any():  # how close the reference's own top two were where we disagree (near-ties flip under rounding)
        srt = np.sort(ref[~top], axis=-1)
        gap = srt[:, -1] - srt[:, -2]
        r["disagree_ref_margin_median"], r["disagree_ref_margin_max"] = float(np.median(gap)), float(gap.max())
    if decode_from is not None:
        r["top1_agree_prefill_part"] = int(top[:decode_from].sum())
        r["top1_agree_decode_steps"] = int(top[decode_from:].sum())
    return r


def margin(ref):
    s = np.sort(ref, axis=-1)
    return float(np.median(s[:, -1] - s[:, -2]))


def load_dump(d):
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    toks = np.fromfile(os.path.join(d, "tokens.bin"), dtype=np.int32)
    runs = {}
    for run in c["runs"]:
        runs[run] = np.fromfile(os.path.join(d, f"logits_{run}.bin"), dtype=np.float32).reshape(len(toks), -1)
        assert runs[run].shape[1] == c["n_vocab"], (run, runs[run].shape)
    return c, toks, runs


def add_extra_runs(c, toks, runs, extra):
    """NAME=DIR: the runs of DIR's dump of the same model and tokens (citadel_deepseek_cpu_ref: prefill only; the
    benchmark's exact path: prefill, chunked, decode): prefill as run NAME, any other run R as NAME_R."""
    for spec in extra:
        name, d = spec.split("=", 1)
        c2, toks2, runs2 = load_dump(d)
        same = [k for k in ("seed", "n_layers", "dim", "n_vocab", "n_experts", "kv_lora_rank") if c2[k] != c[k]]
        if same or not np.array_equal(toks, toks2):
            raise SystemExit(f"{d}: not the same model and tokens as the main dump ({same or 'tokens'})")
        for run, logits in runs2.items():
            runs[name if run == "prefill" else f"{name}_{run}"] = logits


def check(dump, out_json, dev, fp32, extra=()):
    t0 = time.time()
    import transformers
    c, toks, runs = load_dump(dump)
    add_extra_runs(c, toks, runs, extra)
    res = {"model": c["name"], "seed": c["seed"], "positions": int(len(toks)),
           "tokens": "token i = (i * 2654435761 + 12345) mod n_vocab (uint32)", "memory_plan": c.get("memory_plan"),
           "transformers": transformers.__version__, "torch": torch.__version__,
           "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}
    plan = c.get("memory_plan") or ""
    if "values per token" in plan:
        res["kv_values_per_token"] = plan.split("KV: ")[1].split(" values per token")[0]
    refs = {}
    for tag, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        if tag == "fp32" and not fp32:
            continue
        t1 = time.time()
        try:
            model = build_hf(c, dtype, dev)
            t2 = time.time()
            refs[tag] = forward(model, toks, dev)
            res[f"hf_{tag}_build_s"], res[f"hf_{tag}_forward_s"] = t2 - t1, time.time() - t2
        except torch.OutOfMemoryError as e:
            res[f"hf_{tag}_error"] = f"out of memory: {str(e).splitlines()[0]}"
        model = None
        if dev == "cuda":
            torch.cuda.empty_cache()
    for run, ours in runs.items():
        res[run] = {f"vs_hf_{tag}": compare(ours, ref, c.get("decode_from") if run.endswith("decode") else None)
                    for tag, ref in refs.items()}
    if "fp32" in refs and "bf16" in refs:
        res["hf_bf16_vs_hf_fp32"] = compare(refs["bf16"], refs["fp32"])
    main_ref = refs.get("fp32", refs.get("bf16"))
    if main_ref is not None:
        res["hf_median_top1_margin"] = margin(main_ref)
        res["hf_logits_std"] = float(main_ref.std())
    res["seconds"] = time.time() - t0
    with open(out_json, "w") as f:
        json.dump(res, f, indent=1)
    print(summary(res))
    return res


def summary(res):
    lines = [f"{res['model']}: {res['positions']} positions, transformers {res['transformers']} on {res['device']}, "
             f"KV {res.get('kv_values_per_token', '?')} values per token"]
    for run in [k for k, v in res.items() if isinstance(v, dict) and any(t.startswith("vs_hf_") for t in v)]:
        for tag in ("fp32", "bf16"):
            r = res.get(run, {}).get(f"vs_hf_{tag}")
            if r:
                lines.append(f"  citadel {run:8s} vs HF {tag}: top-1 {r['top1_agree']}/{r['positions']}, NMSE "
                             f"{r['nmse']:.3g} (median position {r['nmse_median_position']:.3g}, worst "
                             f"{r['worst_position']}: {r['worst_position_nmse']:.3g})")
    r = res.get("hf_bf16_vs_hf_fp32")
    if r:
        lines.append(f"  HF bf16 vs HF fp32 (scale): top-1 {r['top1_agree']}/{r['positions']}, NMSE {r['nmse']:.3g}")
    if "hf_median_top1_margin" in res:
        lines.append(f"  median top-1 margin {res['hf_median_top1_margin']:.3f} logits")
    return "\n".join(lines)


def check_gguf_values(c, path):
    """Every tensor of the C++ tool's GGUF against this script's hash (needs the gguf package; skipped without)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return "skipped (no gguf package)"
    names = {"token_embd": "tok_embd", "output_norm": "output_norm", "output": "output", "attn_norm": "attn_norm",
             "attn_q": "wq", "attn_q_a": "wq_a", "attn_q_a_norm": "q_a_norm", "attn_q_b": "wq_b",
             "attn_kv_a_mqa": "wkv_a", "attn_kv_a_norm": "kv_a_norm", "attn_k_b": "wk_b", "attn_v_b": "wv_b",
             "attn_output": "wo", "ffn_norm": "ffn_norm", "ffn_gate": "gate", "ffn_up": "up", "ffn_down": "down",
             "ffn_gate_inp": "gate_inp", "exp_probs_b": "exp_probs_b", "ffn_gate_exps": "gate_exps",
             "ffn_up_exps": "up_exps", "ffn_down_exps": "down_exps", "ffn_gate_shexp": "gate_shexp",
             "ffn_up_shexp": "up_shexp", "ffn_down_shexp": "down_shexp"}
    n = 0
    for t in GGUFReader(path).tensors:
        p = t.name.split(".")
        layer, base = (int(p[1]), p[2]) if p[0] == "blk" else (0, p[0])
        want = synth(c, names[base], layer, "cpu").float().numpy().reshape(-1)
        got = np.array(t.data, dtype=np.float32).reshape(-1)
        if not np.array_equal(want, got):
            raise SystemExit(f"{t.name}: hash values differ from the C++ synth_weight_value "
                             f"({int((want != got).sum())} of {got.size})")
        n += 1
    return f"{n} tensors bit-identical"


def selftest_tiny(tool, out_json):
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    res, ok = {}, True
    for preset in ("deepseek2-tiny", "deepseek3-tiny"):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([tool, preset, d, "256"], check=True)
            c, toks, runs = load_dump(d)
            values = check_gguf_values(c, os.path.join(d, "model.gguf"))
            ref = forward(build_hf(c, torch.float32, "cpu"), toks, "cpu")
            bad = forward(build_hf(c, torch.float32, "cpu", swap_gate_up=True), toks, "cpu")
        r = compare(runs["prefill"], ref)
        r_bad = compare(runs["prefill"], bad)
        rel = r["max_abs_diff"] / float(np.abs(ref).max())
        passed = r["top1_agree"] == r["positions"] and r["nmse"] < 1e-10 and rel < 1e-5 and r_bad["nmse"] > 1e-3
        ok &= passed
        res[preset] = {"passed": passed, "gguf_values": values, "citadel_cpu_exact_vs_hf_fp32": r,
                       "max_abs_diff_over_max_abs_logit": rel, "wrong_mapping_nmse": r_bad["nmse"],
                       "wrong_mapping_top1_agree": r_bad["top1_agree"]}
        print(f"{preset}: {'PASS' if passed else 'FAIL'}: citadel CPU exact vs HF fp32 top-1 {r['top1_agree']}/"
              f"{r['positions']}, NMSE {r['nmse']:.3g}, max |diff| / max |logit| {rel:.3g}; gguf values: {values}; "
              f"gate/up swapped: NMSE {r_bad['nmse']:.3g}, top-1 {r_bad['top1_agree']}")
    if out_json:
        with open(out_json, "w") as f:
            json.dump(res, f, indent=1)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", nargs="?")
    ap.add_argument("out_json", nargs="?")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 HF forward")
    ap.add_argument("--extra-run", action="append", default=[], metavar="NAME=DIR",
                    help="also compare DIR's logits_prefill.bin (citadel_deepseek_cpu_ref) as run NAME")
    ap.add_argument("--selftest-tiny", metavar="CPU_REF_TOOL", help="path of citadel_deepseek_cpu_ref")
    a = ap.parse_args()
    if a.selftest_tiny:
        sys.exit(0 if selftest_tiny(a.selftest_tiny, a.dump) else 1)
    if not a.dump or not a.out_json:
        ap.error("DUMP_DIR and OUT_JSON are required")
    check(a.dump, a.out_json, a.device, not a.no_fp32, a.extra_run)


if __name__ == "__main__":
    main()
