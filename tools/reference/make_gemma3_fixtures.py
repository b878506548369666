#!/usr/bin/env python3
"""HF transformers references for Gemma-3 (tests/model/hf_parity_test.cc, Gemma3270mExactMatchesTransformers).

The real gemma-3-270m GGUF of the catalogue (`citadel pull gemma3-270m`: Q4_K_M) loaded by transformers' own GGUF
reader (dequantized to fp32; it undoes the converter's +1 on the norm weights), eager attention, CPU fp32. For prompts
of random token ids (one longer than the 512-token sliding window, so that local layers really slide) we record the
greedy continuation and the last prompt position's logits, in the format of make_synth_fixtures.py, plus the token
ids of a few texts (the tokenizer check).

  python3 tools/reference/make_gemma3_fixtures.py --gguf ~/.cache/citadel/models/gemma-3-270m-q4_k_m.gguf \\
      --out tests/golden/model/gemma3-270m-q4_k_m.json

Needs: torch, transformers (>= 5), gguf (pip).
"""
import argparse
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_synth_fixtures  # noqa: E402  (cases_for)

TEXTS = ["Hello world, what is the capital of France?", "  leading spaces\tand tabs\n\nnew lines",
         "Ünïcödé: 日本語のテキスト, العربية, emoji 🎉🚀", "def f(x):\n    return x ** 2  # code"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    d, f = os.path.split(os.path.abspath(args.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    make_synth_fixtures.PROMPT_LENS = [1, 7, 40, 600]
    make_synth_fixtures.STRIDE = 97  # a 262144-token vocabulary: keep the fixture small
    n_vocab = model.config.vocab_size
    doc = {"model": "gemma3-270m (" + f + ")", "reference": "transformers fp32 CPU (GGUF loader, eager)",
           "n_vocab": n_vocab, "sliding_window": model.config.sliding_window,
           "cases": make_synth_fixtures.cases_for(model, n_vocab, 3000),
           "texts": [{"text": t, "ids": tok(t, add_special_tokens=True)["input_ids"]} for t in TEXTS]}
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
    print("min greedy gap", min(c["min_greedy_gap"] for c in doc["cases"]))


if __name__ == "__main__":
    main()
