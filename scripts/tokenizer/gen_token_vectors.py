#!/usr/bin/env python3
"""gen_token_vectors.py — expected token ids from Hugging Face `tokenizers`
(PyPI) for texts that the shared fixtures do not cover, written to
tests/data/tokenizer/hf_token_vectors.json and checked by
tests/unit/test_tokenizer_hf.c.

The tokenizers are built here in Python, independently of quench:
  - GLM-4.5: the tiktoken ranks file converted the way transformers'
    TikTokenConverter does (every split of a token into two tokens is a
    merge, ordered by the merged token's rank, then the pieces' ranks), a
    Split(GLM-4 regex, isolated) + ByteLevel(use_regex=False) pre-tokenizer,
    and the added tokens of GLM-4.5's tokenizer_config.json;
  - Qwen2: vocab.json + merges.txt with NFC, Split(Qwen2 regex) + ByteLevel.
Run from the repository root (needs `pip install tokenizers`):
    [QN_FIXTURES=DIR] python3 scripts/tokenizer/gen_token_vectors.py
quench never runs Python; the output file is committed.
"""
import base64
import json
import os
import sys

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

fx = os.environ.get("QN_FIXTURES", os.path.join("..", "shared", "fixtures"))
GLM_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
          r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
           r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()


def tok_str(b):
    return "".join(B2U[x] for x in b)


def glm_tokenizer():
    ranks = {}
    with open(os.path.join(fx, "glm4_9b_chat_tokenizer", "tokenizer.model"), "rb") as f:
        for line in f.read().splitlines():
            if line:
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    vocab, merges = {}, []
    for token, rank in ranks.items():
        vocab[tok_str(token)] = rank
        if len(token) == 1:
            continue
        local = []
        for i in range(1, len(token)):
            l, r = token[:i], token[i:]
            if l in ranks and r in ranks:
                local.append((l, r, rank))
        local.sort(key=lambda x: (ranks[x[0]], ranks[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2])
    merges = [(tok_str(a), tok_str(b)) for a, b, _ in merges]
    t = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GLM_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    cfg = json.load(open(os.path.join(fx, "glm45_config_rtpllm", "tokenizer_config.json")))
    added = sorted(((int(k), v) for k, v in cfg["added_tokens_decoder"].items()))
    for i, v in added:
        assert t.get_vocab_size() == i, (t.get_vocab_size(), i)
        t.add_special_tokens([AddedToken(v["content"], special=True, normalized=False)])
    return t, len(merges)


def qwen_tokenizer():
    d = os.path.join(fx, "qwen2_tokenizer_rtpllm")
    vocab = json.load(open(os.path.join(d, "vocab.json"), encoding="utf-8"))
    merges = []
    for i, line in enumerate(open(os.path.join(d, "merges.txt"), encoding="utf-8")):
        line = line.strip()
        if (i == 0 and line.startswith("#version:")) or not line:
            continue
        merges.append(tuple(line.split()))
    t = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken(s, special=True, normalized=False)
                          for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    return t


def main():
    texts = []
    with open(os.path.join(fx, "gsm8k", "test.jsonl"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 120:
                break
            row = json.loads(line)
            texts.append(row["question"])
            texts.append(row["answer"])
    texts += [
        "Ünïcödé façade — naïve café; Ωmega ≠ omega; ﬁ ligature; Ⅻ; ½ ¾; ２０２４年",
        "e\u0301 a\u030a\u0301 combining; 👨‍👩‍👧‍👦 🏳️‍🌈 👩🏽‍💻 🇫🇷",
        "def f(x):\n    return x**2  # comment\n\n\n\tif x:\n\t\tpass\r\n",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "1234567890 12,345.678 3.14159e-10 0x1F 1e100",
        "  leading spaces, trailing spaces   \n\n   \n",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
        "[gMASK]<sop><|user|>\nhello<|assistant|>\n<think></think>\nworld<|endoftext|>",
        "I'M SURE YOU'LL SEE THEY'RE HERE, 'S 'T 'D",
        "ſ K Å µ ß ΐ ﬀ",
        "\u00a0nbsp\u2009thin\u3000ideographic\u2028line\u2029para\u0085nel",
        "Русский текст, ελληνικά, עברית, العربية, हिन्दी, ไทย, ქართული",
    ]

    glm, n_merges = glm_tokenizer()
    qwen = qwen_tokenizer()
    cases = []
    for t in texts:
        cases.append({"text": t, "glm": glm.encode(t, add_special_tokens=False).ids,
                      "qwen2": qwen.encode(t, add_special_tokens=False).ids})
    out = {"note": "generated by scripts/tokenizer/gen_token_vectors.py with tokenizers "
                   + tokenizers.__version__ + "; GLM merges derived in Python: " + str(n_merges),
           "glm_merges": n_merges, "cases": cases}
    path = os.path.join("tests", "data", "tokenizer", "hf_token_vectors.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}; GLM merges {n_merges}")


if __name__ == "__main__":
    main()
