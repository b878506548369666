#!/usr/bin/env python3
"""Tokenizer fixtures from independent implementations (HF tokenizers, sentencepiece, transformers).

  python3 tools/reference/make_tokenizer_fixtures.py vocab-gguf SRC.gguf[.part] OUT.gguf
      Writes a vocab-only GGUF (general.* + tokenizer.* keys, no tensors) from the first bytes of a GGUF, which
      may be one part of a split file: only the KV section has to be present.
  python3 tools/reference/make_tokenizer_fixtures.py fixtures [--models DIR]
      Reads tests/golden/tokenizer/corpus.txt and writes tests/golden/tokenizer/<vocab>.json for each vocab whose
      file is present, plus pretok.json (pre-token splits of every byte-level family).

Corpus: one case per line, UTF-8; escapes \\n \\r \\t \\\\ \\xNN \\u{HEX} are decoded. Lines starting with '#' are
comments. Needs: pip install tokenizers transformers gguf sentencepiece protobuf (no torch).
"""
import json
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden", "tokenizer")

# ---------------------------------------------------------------- GGUF KV section (own reader: parts lack tensors)

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf_kv(path):
    with open(path, "rb") as f:
        data = f.read(256 << 20)  # the KV section of every model here fits in the first 256 MiB
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take("<Q")
        s = data[pos:pos + n]
        pos += n
        if len(s) != n:
            raise ValueError("truncated string")
        return s.decode("utf-8", errors="surrogateescape")

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("<I"), take("<Q")
            return (et, [value(et) for _ in range(n)])
        return take(SCALAR[t])

    assert data[:4] == b"GGUF", path
    pos = 4
    version, _n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    kv = {}
    for _ in range(n_kv):
        key = string()
        t = take("<I")
        kv[key] = (t, value(t))
    return kv


def write_vocab_gguf(src, out):
    import gguf
    kv = read_gguf_kv(src)
    arch = kv["general.architecture"][1]
    w = gguf.GGUFWriter(out, arch)
    for key, (t, v) in kv.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        vt = gguf.GGUFValueType(t)
        if t == 9:
            et, items = v
            w.add_key_value(key, items, vt, sub_type=gguf.GGUFValueType(et))
        else:
            w.add_key_value(key, v, vt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------- corpus

def unescape(line):
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            n = line[i + 1]
            if n in "nrt\\":
                out.append({"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}[n])
                i += 2
                continue
            if n == "x":
                out.append(chr(int(line[i + 2:i + 4], 16)))
                i += 4
                continue
            if n == "u" and line[i + 2] == "{":
                j = line.index("}", i)
                out.append(chr(int(line[i + 3:j], 16)))
                i = j + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def load_corpus():
    cases = []
    with open(os.path.join(GOLDEN, "corpus.txt"), encoding="utf-8") as f:
        for raw in f.read().split("\n"):
            if raw.startswith("#") or raw == "":
                continue
            cases.append(unescape(raw))
    cases.append("\n".join(cases[:40]))  # one long multi-line case
    return cases


# ---------------------------------------------------------------- reference tokenizers

HF_REGEX = {
    "gpt2": None,  # ByteLevel(use_regex=True)
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
DS_LETTERS = ("A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
              "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
              "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
              "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
              "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
              "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
              "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
              "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
              "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
              "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
              "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
              "\U0001e900-\U0001e943")
SPLITS = {
    "deepseek-llm": [r"[\r\n]", r"\s?[" + DS_LETTERS + r"]+", r"\s?[!-/:-~！-／：-～‘-‟　-。]+", r"\s+$",
                     r"[一-龥ࠀ-一가-퟿]+", r"\p{N}+"],
    "deepseek-v3": [r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+",
                    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
}


def hf_pre_tokenizer(family):
    from tokenizers import pre_tokenizers as pt, Regex
    if family == "gpt2":
        return pt.ByteLevel(add_prefix_space=False, use_regex=True)
    if family == "smollm":
        return pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    regexes = SPLITS.get(family) or [HF_REGEX[family]]
    return pt.Sequence([pt.Split(Regex(r), behavior="isolated", invert=False) for r in regexes] +
                       [pt.ByteLevel(add_prefix_space=False, use_regex=False)])


def byte_decoder():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def pretok_fixture(cases):
    dec = byte_decoder()
    out = {}
    for fam in ["gpt2", "llama3", "qwen2", "smollm", "deepseek-llm", "deepseek-v3"]:
        p = hf_pre_tokenizer(fam)
        rows = []
        for text in cases:
            pieces = [bytes(dec[c] for c in s).decode("utf-8") for s, _ in p.pre_tokenize_str(text)]
            rows.append(pieces)
        out[fam] = rows
    return {"source": "HF tokenizers %s pre_tokenizers" % __import__("tokenizers").__version__,
            "texts": cases, "families": out}


def gguf_vocab(path):
    kv = read_gguf_kv(path)
    g = lambda k, d=None: kv[k][1] if k in kv else d
    tokens = g("tokenizer.ggml.tokens")[1]
    types = g("tokenizer.ggml.token_type")[1]
    scores = g("tokenizer.ggml.scores", (0, None))[1]
    merges = g("tokenizer.ggml.merges", (0, []))[1]
    return kv, tokens, types, scores, merges


def hf_bpe_from_gguf(path):
    """HF tokenizers BPE with the family's pre-tokenizer, as the model's own tokenizer.json would have it."""
    from tokenizers import Tokenizer, AddedToken, decoders
    from tokenizers.models import BPE
    kv, tokens, types, _, merges = gguf_vocab(path)
    pre = kv.get("tokenizer.ggml.pre", (8, "default"))[1]
    family = {"smollm": "smollm", "qwen2": "qwen2", "deepseek-r1-qwen": "qwen2", "llama-bpe": "llama3",
              "deepseek-v3": "deepseek-v3", "deepseek-llm": "deepseek-llm"}.get(pre, "gpt2")
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tk = Tokenizer(BPE(vocab, pairs, ignore_merges=(family == "llama3")))
    tk.pre_tokenizer = hf_pre_tokenizer(family)
    tk.decoder = decoders.ByteLevel()
    added = [AddedToken(tokens[i], special=(types[i] == 3), normalized=False)
             for i in range(len(tokens)) if types[i] in (3, 4)]
    tk.add_tokens(added)
    return tk, family


def spm_from_gguf(path):
    """sentencepiece BPE model rebuilt from the GGUF vocab (pieces, scores, types)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    kv, tokens, types, scores, _ = gguf_vocab(path)
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.vocab_size = len(tokens)
    add_prefix = bool(kv.get("tokenizer.ggml.add_space_prefix", (7, True))[1])
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = add_prefix
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    m.trainer_spec.unk_id = kv.get("tokenizer.ggml.unknown_token_id", (4, 0))[1]
    m.trainer_spec.bos_id = kv.get("tokenizer.ggml.bos_token_id", (4, -1))[1]
    m.trainer_spec.eos_id = kv.get("tokenizer.ggml.eos_token_id", (4, -1))[1]
    m.trainer_spec.pad_id = kv.get("tokenizer.ggml.padding_token_id", (4, -1))[1]
    tmap = {1: pb.ModelProto.SentencePiece.NORMAL, 2: pb.ModelProto.SentencePiece.UNKNOWN,
            3: pb.ModelProto.SentencePiece.CONTROL, 4: pb.ModelProto.SentencePiece.USER_DEFINED,
            5: pb.ModelProto.SentencePiece.UNUSED, 6: pb.ModelProto.SentencePiece.BYTE}
    for t, s, ty in zip(tokens, scores, types):
        p = m.pieces.add()
        # The GGUF converter writes user-defined pieces with real spaces; sentencepiece matches them after
        # normalization, where spaces are already U+2581.
        p.piece = t.replace(" ", "\u2581") if ty == 4 else t
        p.score = s
        p.type = tmap.get(ty, pb.ModelProto.SentencePiece.NORMAL)
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(m.SerializeToString())
    return sp, kv


def transformers_gguf(path):
    """A second opinion: transformers' own GGUF tokenizer conversion (None if it cannot load this file)."""
    try:
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    except Exception as e:  # noqa: BLE001 - any failure just drops the cross-check
        print("transformers cannot load %s: %s" % (path, e))
        return None


def vocab_fixtures(models, cases):
    out = {}
    smol = os.path.join(models, "SmolLM2-135M-Instruct.Q4_1.gguf")
    r1 = os.path.join(models, "deepseek-r1-distill-qwen-vocab.gguf")
    for name, path in [("smollm2", smol), ("r1_distill_qwen", r1)]:
        if not os.path.exists(path):
            print("skip %s: %s absent" % (name, path))
            continue
        tk, family = hf_bpe_from_gguf(path)
        cross = transformers_gguf(path)
        rows = []
        for text in cases:
            tk.encode_special_tokens = False
            ids_sp = tk.encode(text, add_special_tokens=False).ids
            if cross is not None and cross.encode(text, add_special_tokens=False) != ids_sp:
                print("warning: %s: HF tokenizers and transformers-from-GGUF differ on %r" % (name, text))
            tk.encode_special_tokens = True
            ids = tk.encode(text, add_special_tokens=False).ids
            rows.append({"text": text, "ids": ids, "ids_special": ids_sp,
                         "roundtrip": tk.decode(ids, skip_special_tokens=False) == text})
        out[name] = {"model_file": os.path.basename(path), "source": "HF tokenizers BPE + %s pre-tokenizer" % family,
                     "add_bos": bool(read_gguf_kv(path).get("tokenizer.ggml.add_bos_token", (7, False))[1]),
                     "cases": rows}
    gemma = os.path.join(models, "gemma3-vocab.gguf")
    if os.path.exists(gemma):
        sp, kv = spm_from_gguf(gemma)
        cross = transformers_gguf(gemma)
        rows = []
        for text in cases:
            ids = sp.encode(text)
            if cross is not None and cross.encode(text, add_special_tokens=False) != ids:
                print("warning: sentencepiece and transformers differ on %r" % text)
            rows.append({"text": text, "ids": ids, "roundtrip": sp.decode(ids) == text})
        out["gemma3"] = {"model_file": "gemma3-vocab.gguf", "source": "sentencepiece %s BPE from GGUF vocab"
                         % __import__("sentencepiece").__version__, "cases": rows}
    mini = os.path.join(models, "all-MiniLM-L6-v2", "tokenizer.json")
    if os.path.exists(mini):
        from tokenizers import Tokenizer
        tk = Tokenizer.from_file(mini)
        tk.no_padding()
        rows = []
        for text in cases:
            e = tk.encode(text)
            rows.append({"text": text, "ids": e.ids, "decoded": tk.decode(e.ids)})
        out["minilm"] = {"model_file": "all-MiniLM-L6-v2/tokenizer.json", "source": "HF tokenizers from tokenizer.json",
                         "cases": rows}
    return out


def synthetic_bpe(cases):
    """Small byte-level BPE vocabs trained on the corpus with each family's pre-tokenizer (HF BpeTrainer), saved as
    tokenizer.json; whole words added to the vocab without merges exercise Llama-3's ignore_merges."""
    from tokenizers import Tokenizer, decoders, trainers
    from tokenizers.models import BPE
    from tokenizers import pre_tokenizers as pt
    out = {}
    for fam in ["llama3", "qwen2", "deepseek-v3", "deepseek-llm", "gpt2", "smollm"]:
        tk = Tokenizer(BPE(ignore_merges=(fam == "llama3")))
        tk.pre_tokenizer = hf_pre_tokenizer(fam)
        tk.decoder = decoders.ByteLevel()
        tr = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pt.ByteLevel.alphabet(), show_progress=False,
                                 special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tk.train_from_iterator(cases * 3, tr)
        if fam == "llama3":
            # Whole words in the vocab but unreachable by merges: with ignore_merges they are one token.
            j = json.loads(tk.to_str())
            vocab = j["model"]["vocab"]
            for w in ["Ġsupercalifragilisticexpialidocious", "Ġquick", "Ġbrown", "ĠWindows"]:
                vocab.setdefault(w, len(vocab) + 3)
            tk = Tokenizer.from_str(json.dumps(j))
        rows = []
        for text in cases:
            ids = tk.encode(text, add_special_tokens=False).ids
            rows.append({"text": text, "ids": ids, "roundtrip": tk.decode(ids, skip_special_tokens=False) == text})
        out[fam] = {"tokenizer_json": json.loads(tk.to_str()), "cases": rows}
    return {"source": "HF tokenizers %s BpeTrainer" % __import__("tokenizers").__version__, "families": out}


def synthetic_spm(cases):
    """A Llama-2-style SentencePiece BPE (add_dummy_prefix, byte fallback) trained on the corpus by sentencepiece;
    pieces/scores/types go into the fixture so the C++ side builds the same vocab."""
    import io
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([c for c in cases if c.strip()] * 5), model_writer=buf,
                                   model_type="bpe", vocab_size=800, byte_fallback=True, add_dummy_prefix=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   character_coverage=0.98, user_defined_symbols=["<tool>"], split_digits=True,
                                   minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    m = pb.ModelProto()
    m.ParseFromString(buf.getvalue())
    gguf_type = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6}
    vocab = {"tokens": [p.piece for p in m.pieces], "scores": [p.score for p in m.pieces],
             "types": [gguf_type[p.type] for p in m.pieces], "add_space_prefix": True,
             "bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id()}
    rows = []
    for text in cases:
        ids = sp.encode(text)
        rows.append({"text": text, "ids": ids, "roundtrip": sp.decode(ids) == text})
    return {"source": "sentencepiece %s BPE trainer" % spm.__version__, "vocab": vocab, "cases": rows}


def dump(name, obj):
    path = os.path.join(GOLDEN, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "vocab-gguf":
        write_vocab_gguf(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) >= 2 and sys.argv[1] == "fixtures":
        models = sys.argv[3] if len(sys.argv) >= 4 and sys.argv[2] == "--models" else "/tmp/models"
        cases = load_corpus()
        dump("pretok.json", pretok_fixture(cases))
        dump("synthetic_bpe.json", synthetic_bpe(cases))
        dump("synthetic_spm.json", synthetic_spm(cases))
        for name, obj in vocab_fixtures(models, cases).items():
            dump(name + ".json", obj)
        return
    print(__doc__)
    sys.exit(2)


if __name__ == "__main__":
    main()
