#!/usr/bin/env python3
"""Reference outputs of a GGUF model from HF transformers (fp32, CPU), for tests/model/.

For each prompt: the prompt token ids (from the HF tokenizer, so the C++ test does not depend on ours), 64 greedy
continuation ids, and the last prompt position's logits (top 32 and a fixed stride sample over the whole vocab).

  python3 tools/reference/make_model_fixtures.py MODEL.gguf OUT.json [--chat]

Needs: torch, transformers, accelerate, gguf (pip).
"""
import argparse
import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea,",
    "1, 2, 3, 5, 8, 13,",
    "The three primary colors are",
    "Translate to French: I would like a cup of coffee.",
    "Q: What is the boiling point of water at sea level?\nA:",
    "In machine learning, overfitting means",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--stride", type=int, default=97)
    args = ap.parse_args()

    d, f = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    cases = []
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0, -1].float()
            out = model.generate(ids, max_new_tokens=args.new_tokens, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        top = torch.topk(logits, 32)
        cases.append({
            "prompt": p,
            "prompt_ids": ids[0].tolist(),
            "greedy_ids": out[0, ids.shape[1]:].tolist(),
            "top_ids": top.indices.tolist(),
            "top_logits": [round(v, 5) for v in top.values.tolist()],
            "sample_stride": args.stride,
            "sample_logits": [round(v, 5) for v in logits[::args.stride].tolist()],
        })
    with open(args.out, "w") as fh:
        json.dump({"model": os.path.basename(args.model), "reference": "transformers fp32 CPU",
                   "n_vocab": int(logits.shape[0]), "cases": cases}, fh)
        fh.write("\n")


if __name__ == "__main__":
    main()
