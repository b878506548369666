#!/usr/bin/env python3
"""HF transformers references for Citadel's tiny DeepSeek-V2 and V3 models (tests/model/hf_parity_test.cc).

`citadel synth --arch deepseek2 --preset deepseek2-tiny|deepseek3-tiny --seed 1 --dtype f32` writes a GGUF in
llama.cpp's MLA layout (deterministic, so the C++ test regenerates the same bytes). transformers has no GGUF loader
for deepseek2, so this script maps the tensors to HF names itself (gguf-py reads them) and builds
DeepseekV2ForCausalLM / DeepseekV3ForCausalLM from the GGUF's metadata:

  attn_k_b [H, r, nope] and attn_v_b [H, v, r]  -> kv_b_proj [H (nope + v), r]   (per head: k_b^T, then v_b)
  ffn_{gate,up}_exps [E, Fe, D]                  -> mlp.experts.gate_up_proj [E, 2 Fe, D]
  ffn_down_exps [E, D, Fe]                       -> mlp.experts.down_proj
  yarn_log_multiplier                            -> mscale = mscale_all_dim = yarn_log_multiplier / 0.1

and records, for a few prompts of random token ids, the greedy continuation (32 tokens) and the last prompt
position's logits, in the format of make_synth_fixtures.py.

It also saves each model as an HF checkpoint (config.json + model.safetensors, fp32), for Citadel's safetensors path:
  <preset>-hf/           what transformers >= 5 save_pretrained writes: rope_parameters, fused experts
                         (mlp.experts.gate_up_proj [E, 2 Fe, D], mlp.experts.down_proj [E, D, Fe])
  deepseek2-tiny-hf-experts/   the original checkpoints' layout: one tensor per expert
                         (mlp.experts.E.{gate,up,down}_proj.weight) and their config.json keys (rope_scaling,
                         scoring_func, topk_method); same logits as deepseek2-tiny.json
  deepseek3-tiny-hf-fp8/ V3's FP8 checkpoint layout: per-expert tensors, every decoder linear weight but the router
                         float8_e4m3fn with a weight_scale_inv of 16 x 32 blocks (quantization_config.
                         weight_block_size; partial blocks at the edges); its fixture deepseek3-tiny-fp8.json is the
                         same model run on the dequantized weights (fp8 * scale_inv, computed here)
  fp8-blocks.safetensors one F8_E4M3 matrix [130, 260] with its 128 x 128 block scales and the dequantized f32 reference It also writes deepseek_shapes.json: the parameter counts
transformers gives the real DeepSeek-V2-Lite and V3 configs (on the meta device: nothing allocated), which
`citadel synth`'s presets of those shapes must match.

  python3 tools/reference/make_deepseek_fixtures.py --citadel build/citadel --out-dir tests/golden/model

Needs: torch, transformers (>= 5), gguf, safetensors (pip).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from gguf import GGUFReader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_synth_fixtures  # noqa: E402  (cases_for)

PRESETS = {"deepseek2-tiny": "DeepseekV2", "deepseek3-tiny": "DeepseekV3"}


def read_meta(reader):
    meta = {}
    for f in reader.fields.values():
        if not f.name.startswith("deepseek2."):
            continue
        v = f.parts[f.data[0]]
        meta[f.name[len("deepseek2."):]] = v.tobytes().decode() if v.dtype == np.uint8 else v.item()
    return meta


def hf_config(kind, m, n_vocab):
    from transformers import DeepseekV2Config, DeepseekV3Config
    mscale = m["rope.scaling.yarn_log_multiplier"] / 0.1
    rope = {"rope_type": "yarn", "rope_theta": m["rope.freq_base"], "factor": m["rope.scaling.factor"],
            "original_max_position_embeddings": m["rope.scaling.original_context_length"],
            "beta_fast": 32, "beta_slow": 1, "mscale": mscale, "mscale_all_dim": mscale}
    common = dict(
        vocab_size=n_vocab, hidden_size=m["embedding_length"], intermediate_size=m["feed_forward_length"],
        moe_intermediate_size=m["expert_feed_forward_length"], num_hidden_layers=m["block_count"],
        num_attention_heads=m["attention.head_count"], num_key_value_heads=m["attention.head_count"],
        n_shared_experts=m["expert_shared_count"], n_routed_experts=m["expert_count"],
        num_experts_per_tok=m["expert_used_count"], first_k_dense_replace=m["leading_dense_block_count"],
        routed_scaling_factor=m["expert_weights_scale"], kv_lora_rank=m["attention.kv_lora_rank"],
        q_lora_rank=m.get("attention.q_lora_rank"), qk_rope_head_dim=m["rope.dimension_count"],
        qk_nope_head_dim=m["attention.key_length_mla"] - m["rope.dimension_count"],
        v_head_dim=m["attention.value_length_mla"], max_position_embeddings=m["context_length"],
        rms_norm_eps=m["attention.layer_norm_rms_epsilon"], rope_parameters=rope, tie_word_embeddings=False,
        attention_bias=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if kind == "DeepseekV2":
        assert m["expert_gating_func"] == 1 and not m["expert_weights_norm"]
        return DeepseekV2Config(topk_method="greedy", norm_topk_prob=False, **common)
    assert m["expert_gating_func"] == 2
    return DeepseekV3Config(n_group=m["expert_group_count"], topk_group=m["expert_group_used_count"],
                            norm_topk_prob=bool(m["expert_weights_norm"]), **common)


def state_dict(reader, cfg):
    t = {x.name: torch.from_numpy(np.array(x.data, dtype=np.float32)) for x in reader.tensors}
    H, r = cfg.num_attention_heads, cfg.kv_lora_rank
    sd = {"model.embed_tokens.weight": t["token_embd.weight"], "model.norm.weight": t["output_norm.weight"],
          "lm_head.weight": t["output.weight"]}
    simple = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
              "attn_q.weight": "self_attn.q_proj.weight", "attn_q_a.weight": "self_attn.q_a_proj.weight",
              "attn_q_a_norm.weight": "self_attn.q_a_layernorm.weight", "attn_q_b.weight": "self_attn.q_b_proj.weight",
              "attn_kv_a_mqa.weight": "self_attn.kv_a_proj_with_mqa.weight",
              "attn_kv_a_norm.weight": "self_attn.kv_a_layernorm.weight", "attn_output.weight": "self_attn.o_proj.weight",
              "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
              "ffn_down.weight": "mlp.down_proj.weight", "ffn_gate_inp.weight": "mlp.gate.weight",
              "exp_probs_b.bias": "mlp.gate.e_score_correction_bias",
              "ffn_gate_shexp.weight": "mlp.shared_experts.gate_proj.weight",
              "ffn_up_shexp.weight": "mlp.shared_experts.up_proj.weight",
              "ffn_down_shexp.weight": "mlp.shared_experts.down_proj.weight",
              "ffn_down_exps.weight": "mlp.experts.down_proj"}
    for layer in range(cfg.num_hidden_layers):
        b, p = f"blk.{layer}.", f"model.layers.{layer}."
        for g, h in simple.items():
            if b + g in t:
                sd[p + h] = t[b + g]
        k_b = t[b + "attn_k_b.weight"]  # [H, r, nope]
        v_b = t[b + "attn_v_b.weight"]  # [H, v, r]
        sd[p + "self_attn.kv_b_proj.weight"] = torch.cat([k_b.transpose(1, 2), v_b], dim=1).reshape(-1, r)
        assert sd[p + "self_attn.kv_b_proj.weight"].shape[0] == H * (cfg.qk_nope_head_dim + cfg.v_head_dim)
        if b + "ffn_gate_exps.weight" in t:
            sd[p + "mlp.experts.gate_up_proj"] = torch.cat([t[b + "ffn_gate_exps.weight"],
                                                            t[b + "ffn_up_exps.weight"]], dim=1)
    return sd


# The real models' config.json values (deepseek-ai/DeepSeek-V2-Lite, deepseek-ai/DeepSeek-V3).
REAL = {
    "deepseek-v2-lite": ("DeepseekV2", dict(
        vocab_size=102400, hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408, num_hidden_layers=27,
        num_attention_heads=16, num_key_value_heads=16, n_shared_experts=2, n_routed_experts=64, num_experts_per_tok=6,
        first_k_dense_replace=1, kv_lora_rank=512, q_lora_rank=None, qk_rope_head_dim=64, qk_nope_head_dim=128,
        v_head_dim=128, tie_word_embeddings=False)),
    "deepseek-v3": ("DeepseekV3", dict(
        vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
        num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1, n_routed_experts=256,
        num_experts_per_tok=8, first_k_dense_replace=3, kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64,
        qk_nope_head_dim=128, v_head_dim=128, n_group=8, topk_group=4, tie_word_embeddings=False)),
}


def write_shapes(out_dir):
    import transformers
    doc = {}
    for preset, (kind, kw) in REAL.items():
        cfg = getattr(transformers, kind + "Config")(**kw)
        with torch.device("meta"):
            model = getattr(transformers, kind + "ForCausalLM")(cfg)
        params = sum(p.numel() for p in model.parameters())
        # V3's e_score_correction_bias is a buffer in transformers, a tensor (exp_probs_b) in the GGUF.
        bias = sum(b.numel() for n, b in model.named_buffers() if n.endswith("e_score_correction_bias"))
        doc[preset] = {"n_params": params + bias, "transformers_parameters": params, "correction_bias": bias}
    with open(os.path.join(out_dir, "deepseek_shapes.json"), "w") as fh:
        json.dump(doc, fh, indent=1)


def hf_state_dict(model):
    # transformers >= 5 layout: what save_pretrained writes for these classes (no tied weights to drop).
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def per_expert(sd):
    # Fused expert stacks -> one tensor per expert (the original checkpoints' layout).
    out = {}
    for k, v in sd.items():
        if k.endswith("mlp.experts.gate_up_proj"):
            base, fe = k[: -len("gate_up_proj")], v.shape[1] // 2
            for e in range(v.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = v[e, :fe].contiguous()
                out[f"{base}{e}.up_proj.weight"] = v[e, fe:].contiguous()
        elif k.endswith("mlp.experts.down_proj"):
            base = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = v[e].contiguous()
        else:
            out[k] = v
    return out


def original_config(cfg, kind):
    # The config.json keys of the original (remote-code) checkpoints: rope_scaling + rope_theta instead of
    # rope_parameters, the gating spelled out.
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    cfg["rope_scaling"] = rope
    cfg["moe_layer_freq"] = 1
    if kind == "DeepseekV2":
        cfg.update(scoring_func="softmax", topk_method="greedy", n_group=1, topk_group=1)
    else:
        cfg.update(scoring_func="sigmoid", topk_method="noaux_tc")
    return cfg


def save_hf(hf_dir, cfg, sd):
    from safetensors.torch import save_file
    shutil.rmtree(hf_dir, ignore_errors=True)
    os.makedirs(hf_dir)
    with open(os.path.join(hf_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1, sort_keys=True)
    save_file(sd, os.path.join(hf_dir, "model.safetensors"), metadata={"format": "pt"})


FP8_MAX = 448.0


def fp8_blocks(w, block):
    # w [rows, cols] f32 -> (float8_e4m3fn [rows, cols], scale_inv [ceil(rows/br), ceil(cols/bc)] f32, dequantized).
    br, bc = block
    rows, cols = w.shape
    sr, sc = -(-rows // br), -(-cols // bc)
    scale = torch.ones(sr, sc, dtype=torch.float32)
    for i in range(sr):
        for j in range(sc):
            amax = w[i * br:(i + 1) * br, j * bc:(j + 1) * bc].abs().max().item()
            if amax > 0:
                scale[i, j] = amax / FP8_MAX
    full = scale.repeat_interleave(br, 0)[:rows].repeat_interleave(bc, 1)[:, :cols]
    q = (w / full).to(torch.float8_e4m3fn)
    return q, scale, q.to(torch.float32) * full


def fp8_checkpoint(sd, block):
    # Every decoder linear weight but the router -> fp8 + weight_scale_inv; returns (checkpoint, dequantized sd).
    ckpt, deq = {}, {}
    for k, v in sd.items():
        if k.startswith("model.layers.") and v.dim() == 2 and not k.endswith("mlp.gate.weight"):
            q, scale, d = fp8_blocks(v, block)
            ckpt[k], ckpt[k + "_scale_inv"], deq[k] = q, scale, d
        else:
            ckpt[k], deq[k] = v, v
    return ckpt, deq


def fused(sd):
    # Per-expert tensors -> the fused stacks transformers >= 5 loads.
    out, groups = {}, {}
    for k, v in sd.items():
        if ".mlp.experts." in k:
            base, rest = k.split(".mlp.experts.")
            e, name = rest.split(".", 1)
            groups.setdefault(base, {}).setdefault(name, {})[int(e)] = v
        else:
            out[k] = v
    for base, g in groups.items():
        n = len(g["gate_proj.weight"])
        out[base + ".mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([g["gate_proj.weight"][e], g["up_proj.weight"][e]]) for e in range(n)])
        out[base + ".mlp.experts.down_proj"] = torch.stack([g["down_proj.weight"][e] for e in range(n)])
    return out


def write_fp8_blocks(out_dir):
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(7)
    w = torch.randn(130, 260, generator=g) * torch.logspace(-3, 1, 130).unsqueeze(1)
    q, scale, d = fp8_blocks(w, (128, 128))
    save_file({"w": q, "w_scale_inv": scale, "reference": d}, os.path.join(out_dir, "fp8-blocks.safetensors"))


def save_checkpoints(model, kind, preset, n_vocab, out_dir, seed):
    import transformers
    cfg = model.config.to_dict()
    cfg["architectures"] = [kind + "ForCausalLM"]
    cfg["_name_or_path"] = f"citadel synth {preset}"
    sd = hf_state_dict(model)
    save_hf(os.path.join(out_dir, preset + "-hf"), cfg, sd)
    if kind == "DeepseekV2":
        save_hf(os.path.join(out_dir, preset + "-hf-experts"), original_config(dict(cfg), kind), per_expert(sd))
        return
    block = [16, 32]
    ckpt, deq = fp8_checkpoint(per_expert(sd), block)
    fcfg = original_config(dict(cfg), kind)
    fcfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                   "weight_block_size": block}
    save_hf(os.path.join(out_dir, preset + "-hf-fp8"), fcfg, ckpt)
    ref = getattr(transformers, kind + "ForCausalLM")(model.config).to(torch.float32)
    ref.load_state_dict(fused(deq), strict=True)
    ref.eval()
    doc = {"model": f"{preset}-hf-fp8: citadel synth --arch deepseek2 --preset {preset} --seed {seed} --dtype f32, "
                    f"linear weights as float8_e4m3fn in {block[0]} x {block[1]} blocks",
           "reference": f"transformers {transformers.__version__} {kind}ForCausalLM fp32 CPU (eager) on the "
                        "dequantized weights",
           "n_vocab": n_vocab, "cases": make_synth_fixtures.cases_for(ref, n_vocab, 2000 + seed)}
    with open(os.path.join(out_dir, preset + "-fp8.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
    print(preset, "fp8 min greedy gap", min(c["min_greedy_gap"] for c in doc["cases"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--citadel", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    import transformers
    make_synth_fixtures.NEW_TOKENS = 32
    tmp = tempfile.mkdtemp()
    try:
        for preset, kind in PRESETS.items():
            path = os.path.join(tmp, preset + ".gguf")
            subprocess.run([args.citadel, "synth", "--arch", "deepseek2", "--preset", preset, "--seed",
                            str(args.seed), "--dtype", "f32", "--out", path], check=True)
            reader = GGUFReader(path)
            meta = read_meta(reader)
            n_vocab = meta["vocab_size"]
            cfg = hf_config(kind, meta, n_vocab)
            cfg._attn_implementation = "eager"
            model = getattr(transformers, kind + "ForCausalLM")(cfg).to(torch.float32)
            missing, unexpected = model.load_state_dict(state_dict(reader, cfg), strict=False)
            missing = [k for k in missing if not k.endswith("e_score_correction_bias") or kind == "DeepseekV3"]
            assert not missing and not unexpected, (missing, unexpected)
            model.eval()
            doc = {"model": f"citadel synth --arch deepseek2 --preset {preset} --seed {args.seed} --dtype f32",
                   "reference": f"transformers {transformers.__version__} {kind}ForCausalLM fp32 CPU (eager)",
                   "n_vocab": n_vocab, "cases": make_synth_fixtures.cases_for(model, n_vocab, 2000 + args.seed)}
            with open(os.path.join(args.out_dir, preset + ".json"), "w") as fh:
                json.dump(doc, fh, indent=1)
            print(preset, "min greedy gap", min(c["min_greedy_gap"] for c in doc["cases"]))
            save_checkpoints(model, kind, preset, n_vocab, args.out_dir, args.seed)
    finally:
        shutil.rmtree(tmp)
    write_shapes(args.out_dir)
    write_fp8_blocks(args.out_dir)


if __name__ == "__main__":
    main()
