#!/usr/bin/env python3
"""HF transformers references for Citadel's synthetic models (tests/model/hf_parity_test.cc, safetensors_test.cc).

For each architecture: `citadel synth --arch A --preset tiny --seed 1 --dtype f32` writes a GGUF (deterministic, so the
C++ test regenerates the same bytes), transformers loads it (its own GGUF reader, Q/K un-permutation for llama),
and for a few prompts of random token ids we record the greedy continuation and the last prompt position's logits
(top 32 + a strided sample), in the format of make_model_fixtures.py. With --hf-dir the llama model is also saved
with save_pretrained as HF safetensors + config.json (fp32, tiny), to test Citadel's safetensors path.

  python3 tools/reference/make_synth_fixtures.py --citadel build/citadel --out-dir tests/golden/model

Needs: torch, transformers, gguf (pip).
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCausalLM

PROMPT_LENS = [1, 7, 23, 40]
NEW_TOKENS = 24
STRIDE = 7


def cases_for(model, n_vocab, seed):
    rng = np.random.RandomState(seed)
    cases = []
    for n in PROMPT_LENS:
        ids = torch.tensor([rng.randint(0, n_vocab, size=n).tolist()])
        with torch.no_grad():
            logits = model(ids).logits[0, -1].float()
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None,
                                 pad_token_id=0, output_scores=True, return_dict_in_generate=True)
        # The smallest top-1 / top-2 gap along the greedy path: a near tie would make the test flaky.
        gaps = [float(torch.topk(s[0], 2).values[0] - torch.topk(s[0], 2).values[1]) for s in out.scores]
        top = torch.topk(logits, 32)
        cases.append({
            "prompt_ids": ids[0].tolist(),
            "greedy_ids": out.sequences[0, n:].tolist(),
            "min_greedy_gap": min(gaps),
            "top_ids": top.indices.tolist(),
            "top_logits": [round(v, 7) for v in top.values.tolist()],
            "sample_stride": STRIDE,
            "sample_logits": [round(v, 7) for v in logits[::STRIDE].tolist()],
        })
    return cases


def save_hf(model, hf_dir):
    # save_pretrained refuses GGUF-loaded models; write what it would: config.json + model.safetensors (HF names,
    # Q/K already un-permuted by the GGUF loader; the tied lm_head left out as transformers does).
    from safetensors.torch import save_file
    os.makedirs(hf_dir)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    # transformers 5 writes rope_parameters; hub models (transformers 4) carry a top-level rope_theta: write both.
    cfg.setdefault("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    with open(os.path.join(hf_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1, sort_keys=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    save_file(sd, os.path.join(hf_dir, "model.safetensors"), metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--citadel", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    try:
        for arch in ["llama", "qwen2"]:
            name = f"synth-tiny-{arch}-seed{args.seed}.gguf"
            gguf = os.path.join(tmp, name)
            subprocess.run([args.citadel, "synth", "--arch", arch, "--preset", "tiny", "--seed", str(args.seed),
                            "--dtype", "f32", "--out", gguf], check=True)
            model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=name, dtype=torch.float32)
            model.eval()
            n_vocab = model.config.vocab_size
            doc = {"model": f"citadel synth --arch {arch} --preset tiny --seed {args.seed} --dtype f32",
                   "reference": "transformers fp32 CPU (GGUF loader)", "n_vocab": n_vocab,
                   "cases": cases_for(model, n_vocab, 1000 + args.seed)}
            with open(os.path.join(args.out_dir, f"synth-tiny-{arch}.json"), "w") as fh:
                json.dump(doc, fh, indent=1)
            if arch == "llama":
                hf_dir = os.path.join(args.out_dir, "synth-tiny-llama-hf")
                shutil.rmtree(hf_dir, ignore_errors=True)
                save_hf(model, hf_dir)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
