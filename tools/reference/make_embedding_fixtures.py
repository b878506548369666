#!/usr/bin/env python3
"""Sentence embeddings of all-MiniLM-L6-v2 from sentence-transformers (the reference), for the C++ parity test.

Usage: make_embedding_fixtures.py [MODEL_DIR] [OUT.json]
  MODEL_DIR  the pulled model (default ~/.cache/citadel/models/all-MiniLM-L6-v2, from `citadel pull minilm-l6`)
  OUT.json   default tests/golden/model/minilm-l6-embeddings.json

Runs the model's own pipeline (modules.json: Transformer -> Pooling(mean) -> Normalize, max_seq_length 256) on the
CPU in fp32 and writes, per sentence, the token ids its tokenizer gives (truncated as the model truncates) and the
normalised embedding rounded to 7 digits. Needs torch, transformers and sentence-transformers (tools/reference venv).
"""
import json
import os
import sys

import torch
from sentence_transformers import SentenceTransformer

LONG = ("Citadel serves language models inside a private network. " * 20 +
        "Sie läuft auf Servern mit Grafikkarten oder nur mit Prozessoren, und jede Anfrage wird protokolliert. " * 6)

SENTENCES = [
    "This is an example sentence.",
    "Each sentence is converted into a vector.",
    "The quick brown fox jumps over the lazy dog!",
    "How do I reset my password?",
    "A man is playing a guitar on the street.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Ich möchte ein Konto eröffnen und brauche Hilfe.",
    "我们的服务器在本地运行，不会把数据发送到外部。",
    "今天天气很好，适合去公园散步。",
    "الذكاء الاصطناعي يغير طريقة عملنا كل يوم.",
    "مرحبا بكم في المكتبة العامة",
    "Café, naïve, résumé: accents are stripped by the uncased tokenizer.",
    "I love this 😀🎉 so much ❤️",
    "🚀",
    "Numbers like 3.14159 and 2026-12-06, and an e-mail: someone@example.com",
    "   leading and trailing spaces   ",
    "UPPER CASE and MiXeD cAsE text",
    "Tabs\tand\nnewlines inside",
    "a",
    LONG,
]


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
        "~/.cache/citadel/models/all-MiniLM-L6-v2")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(__file__), "..", "..", "tests", "golden", "model", "minilm-l6-embeddings.json")
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    max_len = model.max_seq_length
    tok = model.tokenizer
    cases = []
    with torch.no_grad():
        emb = model.encode(SENTENCES, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    for s, e in zip(SENTENCES, emb):
        ids = tok(s, truncation=True, max_length=max_len)["input_ids"]
        full = tok(s, truncation=False)["input_ids"]
        cases.append({"text": s, "ids": ids, "untruncated_tokens": len(full),
                      "embedding": [round(float(x), 7) for x in e]})
    assert any(c["untruncated_tokens"] > max_len for c in cases), "the long text must exceed max_seq_length"
    doc = {"model": "sentence-transformers/all-MiniLM-L6-v2", "max_seq_length": max_len,
           "dim": int(emb.shape[1]), "normalized": True,
           "made_by": "tools/reference/make_embedding_fixtures.py (sentence-transformers, torch fp32 CPU)",
           "cases": cases}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}: {len(cases)} sentences, dim {emb.shape[1]}, max_seq_length {max_len}")


if __name__ == "__main__":
    main()
