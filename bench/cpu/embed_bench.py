#!/usr/bin/env python3
"""Sentence-embedding throughput on this CPU: Citadel's BERT runner against sentence-transformers (PyTorch CPU), in
one run on the same machine, with the same sentences (32 word pieces each, [CLS] and [SEP] included) and the same
thread count. Writes bench/results/cpu-<device>-<date>-embed.json (BENCHMARKS.md).

Usage (with the reference venv, which has torch + sentence-transformers):
  /work/venv-ref/bin/python bench/cpu/embed_bench.py [--bin build-dev/bench/embed_cpu_bench] [--threads 2]
      [--model ~/.cache/citadel/models/all-MiniLM-L6-v2] [--seconds 3] [--repeats 5] [--rounds 2] [--out FILE]
      [--bf16] [--before-bin OLD_BUILD/bench/embed_cpu_bench] [--ref-one-thread]
  (the default FILE gets a -2, -3, ... suffix when a run of the same day already wrote one)
Citadel and sentence-transformers alternate repeat by repeat (so a change of load on a shared machine hits both
alike); the figures are medians over all repeats of all rounds, plus the median of the per-pair speedups. Both sides
include tokenization. --bf16 adds Citadel's bf16-GEMM mode (EmbeddingRunnerOptions::bf16) and --before-bin an older
build of the Citadel benchmark (before/after in one run), each measured in the same alternation; --ref-one-thread
sentence-transformers on one thread as well (on a shared, loaded machine its two OpenMP threads may be slower than
one), with Citadel's speedups against the faster of the two references.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import random
import statistics
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown cpu"


def cpu_detail():
    info = {}
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        info.setdefault(k.strip(), v.strip())
    return f"family {info.get('cpu family', '?')} model {info.get('model', '?')}, {info.get('cpu MHz', '?')} MHz"


def cpu_flags():
    """The SIMD flags of /proc/cpuinfo that the kernels dispatch on."""
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                                "avx512_bf16") if f in have]
    return []


def make_sentences(tok, n, pieces=30, seed=1):
    """n sentences of `pieces` whole-word vocabulary entries (each one word piece) -> pieces + 2 tokens."""
    rng = random.Random(seed)
    words = [w for w in tok.get_vocab() if w.isascii() and w.isalpha() and len(w) >= 3 and not w.startswith("##")]
    words.sort()
    out = []
    while len(out) < n:
        s = " ".join(rng.choice(words) for _ in range(pieces))
        if len(tok(s)["input_ids"]) == pieces + 2:
            out.append(s)
    return out


def bench_st(model, sentences, batch, seconds, repeats):
    model.encode(sentences[:max(batch, 64)], batch_size=batch)  # warm-up
    rates, cpu_rates, i = [], [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        c0 = time.process_time()  # every thread of this process (PyTorch's OpenMP workers included)
        n = 0
        while True:
            chunk = [sentences[(i + k) % len(sentences)] for k in range(batch)]
            i += batch
            model.encode(chunk, batch_size=batch, convert_to_numpy=True)
            n += batch
            if time.perf_counter() - t0 >= seconds:
                break
        rates.append(n / (time.perf_counter() - t0))
        cpu_rates.append(n / max(1e-9, time.process_time() - c0))
    return rates, cpu_rates


def bench_citadel(binary, model_dir, sentences_file, threads, seconds, repeats, batches, extra=()):
    env = dict(os.environ, CITADEL_THREADS=str(threads))
    out = subprocess.run([binary, "--model", model_dir, "--sentences", sentences_file, "--batch",
                          ",".join(map(str, batches)), "--seconds", str(seconds), "--repeats", str(repeats),
                          *extra], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "build-dev/bench/embed_cpu_bench"))
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/citadel/models/all-MiniLM-L6-v2"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="")
    ap.add_argument("--bf16", action="store_true", help="also measure Citadel's bf16-GEMM mode")
    ap.add_argument("--before-bin", default="", help="an older embed_cpu_bench build, measured as 'before'")
    ap.add_argument("--ref-one-thread", action="store_true",
                    help="also measure sentence-transformers on one thread (on a loaded machine its two OpenMP "
                         "threads can be slower than one); speedups against the faster reference are added")
    a = ap.parse_args()
    # Citadel variants: figure-name infix, binary, extra arguments. "" is the default (f32) mode of this build.
    variants = [("", a.bin, [])]
    if a.bf16:
        variants.append(("_bf16", a.bin, ["--bf16"]))
    if a.before_bin:
        variants.append(("_before", a.before_bin, []))

    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(a.threads)
    st = SentenceTransformer(a.model, device="cpu")
    st.eval()
    sentences = make_sentences(st.tokenizer, 256)
    batches = [1, 32]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(sentences) + "\n")
        sentences_file = f.name
    cit = {(v, b): [] for v, _, _ in variants for b in batches}
    cit_cpu = {(v, b): [] for v, _, _ in variants for b in batches}
    bf16_used = None
    ref = {b: [] for b in batches}
    ref_cpu = {b: [] for b in batches}
    ref1 = {b: [] for b in batches}  # --ref-one-thread
    loads = []
    load_start = os.getloadavg()
    try:
        # Citadel and sentence-transformers alternate repeat by repeat (a pair sees about the same machine load).
        for _ in range(a.rounds):
            for b in batches:
                for _ in range(a.repeats):
                    loads.append(os.getloadavg()[0])
                    for v, binary, extra in variants:
                        r = bench_citadel(binary, a.model, sentences_file, a.threads, a.seconds, 1, [b], extra)
                        assert r["tokens_per_sentence"] == 32, r
                        if v == "_bf16":
                            bf16_used = r.get("bf16")
                        cit[(v, b)].append(r["figures"][f"batch{b}_sentences_per_s"])
                        cit_cpu[(v, b)].append(r["figures"][f"batch{b}_sentences_per_cpu_s"])
                    with torch.inference_mode():
                        wall, cpu = bench_st(st, sentences, b, a.seconds, 1)
                        ref[b].extend(wall)
                        ref_cpu[b].extend(cpu)
                        if a.ref_one_thread:
                            torch.set_num_threads(1)
                            ref1[b].extend(bench_st(st, sentences, b, a.seconds, 1)[0])
                            torch.set_num_threads(a.threads)
    finally:
        os.unlink(sentences_file)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                      text=True).stdout.strip():
        commit += "-dirty"
    figures = {}
    for b in batches:
        s, sc = statistics.median(ref[b]), statistics.median(ref_cpu[b])
        figures[f"embed_b{b}_32tok_sentence_transformers_sentences_per_s"] = round(s, 2)
        figures[f"embed_b{b}_32tok_sentence_transformers_sentences_per_cpu_s"] = round(sc, 2)
        figures[f"embed_b{b}_32tok_sentence_transformers_spread_sentences_per_s"] = [round(min(ref[b]), 2),
                                                                                      round(max(ref[b]), 2)]
        s1 = statistics.median(ref1[b]) if a.ref_one_thread else 0.0
        if a.ref_one_thread:
            figures[f"embed_b{b}_32tok_sentence_transformers_1thread_sentences_per_s"] = round(s1, 2)
        for v, _, _ in variants:
            runs, cpu_runs = cit[(v, b)], cit_cpu[(v, b)]
            if a.ref_one_thread:
                figures[f"embed_b{b}_32tok{v}_speedup_vs_faster_reference_x"] = round(
                    statistics.median(runs) / max(s, s1), 3)
            c, cc = statistics.median(runs), statistics.median(cpu_runs)
            figures[f"embed_b{b}_32tok_citadel{v}_sentences_per_s"] = round(c, 2)
            figures[f"embed_b{b}_32tok{v}_speedup_x"] = round(c / s, 3)
            figures[f"embed_b{b}_32tok{v}_speedup_median_of_pairs_x"] = round(
                statistics.median(x / y for x, y in zip(runs, ref[b])), 3)
            figures[f"embed_b{b}_32tok_citadel{v}_sentences_per_cpu_s"] = round(cc, 2)
            figures[f"embed_b{b}_32tok{v}_cpu_efficiency_ratio_x"] = round(cc / sc, 3)
            figures[f"embed_b{b}_32tok_citadel{v}_spread_sentences_per_s"] = [round(min(runs), 2),
                                                                              round(max(runs), 2)]
    date = datetime.date.today().isoformat()
    doc = {
        "device": f"{cpu_name()} ({cpu_detail()}), {os.cpu_count()} cores (shared with other developers' builds)",
        "commit": commit,
        "date": date,
        "model": "all-MiniLM-L6-v2 (citadel pull minilm-l6), f32 weights; f32 math on both sides, except the "
                 "citadel_bf16 figures (GEMM inputs rounded to bf16, f32 sums; attention, norms, pooling f32)",
        "command": f"bench/cpu/embed_bench.py --threads {a.threads} --seconds {a.seconds} --repeats {a.repeats} "
                   f"--rounds {a.rounds}" + (" --bf16" if a.bf16 else "") +
                   (" --ref-one-thread" if a.ref_one_thread else "") +
                   (f" --before-bin {a.before_bin}" if a.before_bin else ""),
        "cpu_flags": cpu_flags(),
        "method": "256 random sentences of 30 whole-word vocabulary entries (32 word pieces with [CLS]/[SEP]); "
                  "batch B = B sentences per call, tokenization included on both sides; warm-up, then repeats of "
                  f"~{a.seconds} s each, Citadel and the reference alternating repeat by repeat; medians over all repeats "
                  "(and the median of the per-pair ratios). Citadel: embed_cpu_bench "
                  f"(CpuEmbeddingRunner, what /v1/embeddings runs), CITADEL_THREADS={a.threads}. "
                  f"Reference: sentence-transformers {sentence_transformers.__version__} encode(), torch "
                  f"{torch.__version__} CPU, torch.set_num_threads({a.threads}). *_per_cpu_s: sentences per CPU-second "
                  "of the process (all its threads, spinning included; Citadel: getrusage, reference: "
                  "time.process_time), what each side does with the CPU time the shared machine gave it.",
        "threads": a.threads,
        "load_average_1m_5m_15m_start": [round(x, 2) for x in load_start],
        "load_average_1m_5m_15m_end": [round(x, 2) for x in os.getloadavg()],
        "load_average_1m_at_pairs": [round(x, 2) for x in loads],
        "citadel_variants": {("citadel" + v): (f"{binary} {' '.join(extra)}".strip() +
                                               (f" (bf16 GEMMs used: {bf16_used})" if v == "_bf16" else ""))
                             for v, binary, extra in variants},
        "pairs_sentences_per_s": {f"batch{b}": [[round(cit[(v, b)][i], 2) for v, _, _ in variants] +
                                                [round(ref[b][i], 2)] for i in range(len(ref[b]))]
                                  for b in batches},
        "pairs_columns": ["citadel" + v for v, _, _ in variants] + ["sentence_transformers"],
        "sentence_transformers_1thread_sentences_per_s": {f"batch{b}": [round(x, 2) for x in ref1[b]]
                                                          for b in batches},
        "figures": figures,
    }
    out = a.out
    if not out:  # one file per run, never overwritten: a second run the same day gets -2, -3, ...
        base = ROOT / "bench/results" / f"cpu-amd-epyc-{date}-embed"
        out, n = f"{base}.json", 2
        while os.path.exists(out):
            out, n = f"{base}-{n}.json", n + 1
    pathlib.Path(out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
