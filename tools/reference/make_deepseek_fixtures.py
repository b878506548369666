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
position's logits, in the format of make_synth_fixtures.py. It also writes deepseek_shapes.json: the parameter counts
transformers gives the real DeepSeek-V2-Lite and V3 configs (on the meta device: nothing allocated), which
`citadel synth`'s presets of those shapes must match.

  python3 tools/reference/make_deepseek_fixtures.py --citadel build/citadel --out-dir tests/golden/model

Needs: torch, transformers (>= 5), gguf (pip).
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
    finally:
        shutil.rmtree(tmp)
    write_shapes(args.out_dir)


if __name__ == "__main__":
    main()
