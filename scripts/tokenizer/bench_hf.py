#!/usr/bin/env python3
"""bench_hf.py — the reference figure for docs/PERFORMANCE.md: Hugging Face
`tokenizers` (Rust, via PyPI) encoding the same file with the same GLM-4.5
tokenizer (built from the ranks file as gen_token_vectors.py builds it), one
call per repeat on the whole text, single thread, as
`quench tokenize --bench` does. Prints the same JSON fields.
    [QN_FIXTURES=DIR] python3 scripts/tokenizer/bench_hf.py FILE REPEATS
"""
import json
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_token_vectors import glm_tokenizer  # noqa: E402

path, reps = sys.argv[1], int(sys.argv[2])
text = open(path, "rb").read().decode("utf-8")
nbytes = len(text.encode("utf-8"))
tok, _ = glm_tokenizer()
w0, c0 = time.perf_counter(), time.process_time()
n = 0
for _ in range(reps):
    n += len(tok.encode(text, add_special_tokens=False).ids)
w1, c1 = time.perf_counter(), time.process_time()
mb = nbytes * reps / 1e6
print(json.dumps({"bytes": nbytes, "repeats": reps, "tokens": n, "seconds": round(w1 - w0, 4),
                  "cpu_seconds": round(c1 - c0, 4), "mb_per_s": round(mb / (w1 - w0), 2),
                  "mb_per_cpu_s": round(mb / (c1 - c0), 2)}))
