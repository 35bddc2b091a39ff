#!/usr/bin/python3
"""generate_ref.py — an independent PyTorch reference for quench's rollout
engine (issue 5): greedy decoding in float64, a checker for `quench generate`
output, and a plain PyTorch generation loop (float32, KV cache) to time
against `quench bench rollout`.

The layer math comes from model_ref.py in this directory (config reading, the
safetensors reader, RMSNorm, RoPE, SwiGLU, the MoE router); nothing here is
taken from quench's C code.

Subcommands:
  greedy --model DIR --input IN.jsonl --max-new-tokens N --out REF.jsonl [--eos ID ...]
         IN lines {"tokens":[...]}. For each prompt, greedy decoding in float64
         that recomputes the whole sequence every step (no KV cache); argmax
         ties go to the lowest id; stops after N tokens or after an eos id
         (which is kept in the output). Writes one line per prompt:
           output_ids       the greedy tokens
           output_logprobs  log_softmax (temperature 1) of each output token
                            given prompt + earlier outputs (teacher-forced)
           margins          per step, top-1 logit minus top-2 logit
           min_margin       the smallest of them (null when no tokens)
           finish_reason    "stop" (eos emitted) or "length"
  check  --ref REF.jsonl --got QUENCH.jsonl [--tol-lp 2e-5]
         Compares `quench generate` output with greedy's, line by line. A got
         line's fields are read from the line itself, or, when the line has
         "samples":[{...}, ...], from its FIRST sample only (greedy samples of
         one prompt are all equal; the others are not looked at). Ids must be
         equal; log-probs finite and within tol over the ids that agree;
         finish_reason equal when both lines carry it. A first differing id at
         a step whose reference margin is < 1e-6 is reported as a near-tie
         (still a failure: decide by hand). Exit 0 when all agree, else 1.
  bench  --model DIR --batch B --prompt-len P --decode-steps N --threads K
         [--dtype float32] [--seed S] [--repeats R] [--verify [--verify-prompts M]]
         A plain PyTorch generation loop on the same weights: batch of B random
         prompts of length P, prefilled in one forward, then N greedy decode
         steps with a per-layer K/V cache grown by torch.cat. One warm-up
         prefill (16 tokens) + decode step, then prefill and decode are timed
         separately; with --repeats R > 1 (default 1) the best of R runs.
         Prints one JSON line {"prefill_tokens_per_s", "decode_tokens_per_s",
         "batch", "threads", ...}. With --verify it instead runs the same loop
         on M (default 2) prompts and checks its greedy tokens against the
         float64 `greedy` decoding of those prompts; exit 1 on a mismatch.

Uses only /usr/bin/python3 with Debian's python3-torch and python3-numpy.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_ref  # noqa: E402  (after the path insert on purpose)

torch = model_ref._torch()

NEAR_TIE = 1e-6


def load_model(model_dir, dtype):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = model_ref.Cfg(json.load(f))
    P = model_ref.load_params(model_dir, dtype, False)
    return cfg, P


def head_weight(cfg, P):
    return P["model.embed_tokens.weight"] if cfg.tied else P["lm_head.weight"]


def argmax_low(z):
    """Index of the largest value of a 1-D tensor; among equal maxima the
    lowest index (stated here rather than relying on torch.argmax's ties)."""
    m = z.max()
    return int((z == m).nonzero(as_tuple=True)[0][0])


def margin_of(z):
    top = torch.topk(z, 2).values if z.numel() >= 2 else None
    return float(top[0] - top[1]) if top is not None else math.inf


# ---------------------------------------------------------------- greedy (float64)

def greedy_one(cfg, P, prompt, max_new, eos):
    """Greedy decoding by recomputing the full sequence each step: the simplest
    loop that is obviously right. Returns (ids, logprobs, margins, reason)."""
    W = head_weight(cfg, P)
    seq = list(prompt)
    ids, lps, margins = [], [], []
    reason = "length"
    for _ in range(max_new):
        h = model_ref.hidden(cfg, P, seq)
        z = h[-1] @ W.T
        t = argmax_low(z)
        ids.append(t)
        lps.append(float(torch.log_softmax(z, dim=-1)[t]))
        margins.append(margin_of(z))
        seq.append(t)
        if t in eos:
            reason = "stop"
            break
    if ids:
        # Self-check: one teacher-forced pass over prompt + outputs (the
        # quantity the trainer recomputes) must give the per-step values.
        lp, _ = model_ref.seq_logprobs(cfg, P, seq, len(prompt), 1.0)
        d = float(np.max(np.abs(lp.numpy() - np.array(lps))))
        if not d <= 1e-9:
            raise SystemExit(f"generate_ref: internal: per-step vs teacher-forced "
                             f"log-prob differ by {d:.3e}")
    return ids, lps, margins, reason


def cmd_greedy(a):
    torch.set_num_threads(max(1, a.threads))
    cfg, P = load_model(a.model, torch.float64)
    eos = set(a.eos or [])
    with open(a.input) as f:
        recs = [json.loads(l) for l in f if l.strip()]
    n_tok, mm = 0, math.inf
    with torch.no_grad(), open(a.out, "w") as f:
        for i, r in enumerate(recs):
            if not r.get("tokens"):
                raise SystemExit(f"generate_ref: {a.input}: line {i + 1}: empty or no \"tokens\"")
            ids, lps, margins, reason = greedy_one(cfg, P, r["tokens"], a.max_new_tokens, eos)
            m = min(margins) if margins else None
            f.write(json.dumps({"output_ids": ids, "output_logprobs": lps, "margins": margins,
                                "min_margin": m, "finish_reason": reason}) + "\n")
            n_tok += len(ids)
            if m is not None:
                mm = min(mm, m)
    print(f"generate_ref greedy: {len(recs)} prompts, {n_tok} tokens, "
          f"min top-1/top-2 logit margin {mm:.3e}")
    return 0


# ---------------------------------------------------------------- check

def first_sample(line):
    s = line.get("samples")
    if isinstance(s, list):
        if not s:
            return None
        return s[0]
    return line


def cmd_check(a):
    with open(a.ref) as f:
        refs = [json.loads(l) for l in f if l.strip()]
    with open(a.got) as f:
        gots = [json.loads(l) for l in f if l.strip()]
    if len(refs) != len(gots):
        print(f"generate_ref: FAIL: {len(gots)} lines in {a.got}, {len(refs)} in {a.ref}")
        return 1
    ok = True
    n_tok, max_d, near_ties = 0, 0.0, 0
    ids_equal = True
    for i, (r, line) in enumerate(zip(refs, gots)):
        g = first_sample(line)
        if g is None or "output_ids" not in g or "output_logprobs" not in g:
            print(f"FAIL line {i}: no output_ids/output_logprobs")
            ok = ids_equal = False
            continue
        rid, gid = r["output_ids"], list(g["output_ids"])
        glp = np.array(g["output_logprobs"], dtype=np.float64)
        if glp.shape != (len(gid),):
            print(f"FAIL line {i}: {glp.shape[0] if glp.ndim else 0} log-probs "
                  f"for {len(gid)} ids")
            ok = False
            continue
        same = 0
        while same < min(len(rid), len(gid)) and rid[same] == gid[same]:
            same += 1
        if same != len(rid) or same != len(gid):
            ok = ids_equal = False
            if same < len(r["margins"]) and r["margins"][same] < NEAR_TIE:
                near_ties += 1
                print(f"FAIL line {i}: ids differ at step {same} (ref {rid[same]}, got "
                      f"{gid[same] if same < len(gid) else 'end'}) at a NEAR-TIE: reference "
                      f"top-1/top-2 margin {r['margins'][same]:.3e} < {NEAR_TIE:g}")
            else:
                where = (f"ref {rid[same] if same < len(rid) else 'end'}, got "
                         f"{gid[same] if same < len(gid) else 'end'}")
                m = r["margins"][same] if same < len(r["margins"]) else None
                mtxt = f", reference margin {m:.3e}" if m is not None else ""
                print(f"FAIL line {i}: ids differ at step {same} ({where}{mtxt}); "
                      f"ref len {len(rid)}, got len {len(gid)}")
        part = glp[:same]
        if not np.all(np.isfinite(part)):
            print(f"FAIL line {i}: non-finite log-prob")
            ok = False
            continue
        if same:
            d = np.abs(part - np.array(r["output_logprobs"][:same], dtype=np.float64))
            j = int(np.argmax(d))
            if d[j] > max_d:
                max_d = float(d[j])
            if not d[j] <= a.tol_lp:
                print(f"FAIL line {i}: |dlogp| {d[j]:.3e} at step {j} > {a.tol_lp:g}")
                ok = False
        n_tok += same
        gr, rr = g.get("finish_reason"), r.get("finish_reason")
        if gr is not None and rr is not None and gr != rr and same == len(rid) == len(gid):
            print(f"FAIL line {i}: finish_reason {gr!r}, reference {rr!r}")
            ok = False
    if ids_equal:
        ids_txt = "ids equal"
    else:
        ids_txt = "ids differ" + (f" ({near_ties} at a near-tie)" if near_ties else "")
    print(f"generate_ref: {len(refs)} prompts, {n_tok} tokens, {ids_txt}, "
          f"max |dlogp| {max_d:.1e} (tol {a.tol_lp:g}): {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


# ---------------------------------------------------------------- plain PyTorch loop

def attn_cached(cfg, P, l, h, cache, start):
    """One attention block for a batch [B, T, H] at positions start..start+T-1
    with the layer's K/V cache (list [K, V], each [B, NKV, S, HD] or None)."""
    B, T, _ = h.shape
    a = f"model.layers.{l}.self_attn."
    q = h @ P[a + "q_proj.weight"].T
    k = h @ P[a + "k_proj.weight"].T
    v = h @ P[a + "v_proj.weight"].T
    if cfg.bias:
        q = q + P[a + "q_proj.bias"]
        k = k + P[a + "k_proj.bias"]
        v = v + P[a + "v_proj.bias"]
    q = q.view(B * T, cfg.NH, cfg.HD)
    k = k.view(B * T, cfg.NKV, cfg.HD)
    v = v.view(B, T, cfg.NKV, cfg.HD).transpose(1, 2)
    if cfg.qk_norm:
        q = model_ref.rmsnorm(q, P[a + "q_norm.weight"], cfg.eps)
        k = model_ref.rmsnorm(k, P[a + "k_norm.weight"], cfg.eps)
    pos = torch.arange(start, start + T).repeat(B)
    q = model_ref.rope(q, pos, cfg.rot, cfg.theta).view(B, T, cfg.NH, cfg.HD).transpose(1, 2)
    k = model_ref.rope(k, pos, cfg.rot, cfg.theta).view(B, T, cfg.NKV, cfg.HD).transpose(1, 2)
    if cache[0] is None:
        cache[0], cache[1] = k, v
    else:
        cache[0] = torch.cat([cache[0], k], dim=2)
        cache[1] = torch.cat([cache[1], v], dim=2)
    # GQA without copying K/V per head: the grp query heads that share a KV
    # head are stacked along the query axis, so each matmul reads the cache once.
    grp = cfg.NH // cfg.NKV
    S = cache[0].shape[2]
    qg = q.reshape(B, cfg.NKV, grp * T, cfg.HD)
    sc = (qg @ cache[0].transpose(2, 3)) / math.sqrt(cfg.HD)  # [B, NKV, grp*T, S]
    if T > 1:
        qpos = torch.arange(start, start + T)[:, None]
        kpos = torch.arange(S)[None, :]
        sc = sc.view(B, cfg.NKV, grp, T, S).masked_fill(kpos > qpos, float("-inf"))
        sc = sc.view(B, cfg.NKV, grp * T, S)
    o = torch.softmax(sc, dim=-1) @ cache[1]  # [B, NKV, grp*T, HD]
    o = o.view(B, cfg.NH, T, cfg.HD).transpose(1, 2).reshape(B, T, cfg.NH * cfg.HD)
    o = o @ P[a + "o_proj.weight"].T
    if cfg.o_bias:
        o = o + P[a + "o_proj.bias"]
    return o


def forward_cached(cfg, P, tokens, caches, start):
    """tokens [B, T] at positions start.. -> logits of the last position [B, V]."""
    B, T = tokens.shape
    x = P["model.embed_tokens.weight"][tokens]  # [B, T, H]
    for l in range(cfg.L):
        pre = f"model.layers.{l}."
        h = model_ref.rmsnorm(x, P[pre + "input_layernorm.weight"], cfg.eps)
        x = x + attn_cached(cfg, P, l, h, caches[l], start)
        h = model_ref.rmsnorm(x, P[pre + "post_attention_layernorm.weight"], cfg.eps)
        if cfg.is_moe(l):
            # all B*T tokens at once; model_ref.moe loops over experts only
            x = x + model_ref.moe(cfg, P, pre, h.reshape(B * T, -1)).view(B, T, -1)
        else:
            m = pre + "mlp."
            x = x + model_ref.swiglu(h, P[m + "gate_proj.weight"], P[m + "up_proj.weight"],
                                     P[m + "down_proj.weight"])
    x = model_ref.rmsnorm(x[:, -1], P["model.norm.weight"], cfg.eps)
    return x @ head_weight(cfg, P).T


def pick(z):
    """Greedy tokens [B] with ties to the lowest id."""
    m = z.max(dim=-1, keepdim=True).values
    ids = torch.arange(z.shape[-1]).expand_as(z)
    return torch.where(z == m, ids, torch.full_like(ids, z.shape[-1])).min(dim=-1).values


def run_loop(cfg, P, prompts, steps):
    """Prefill + `steps` greedy decode steps. Returns (tokens [B, steps+1]
    including the one chosen after prefill, prefill seconds, decode seconds,
    last-step logits history for verify)."""
    caches = [[None, None] for _ in range(cfg.L)]
    t0 = time.perf_counter()
    z = forward_cached(cfg, P, prompts, caches, 0)
    nxt = pick(z)
    t1 = time.perf_counter()
    out, logits = [nxt], [z]
    pos = prompts.shape[1]
    for _ in range(steps):
        z = forward_cached(cfg, P, nxt[:, None], caches, pos)
        nxt = pick(z)
        out.append(nxt)
        logits.append(z)
        pos += 1
    t2 = time.perf_counter()
    return torch.stack(out, dim=1), t1 - t0, t2 - t1, logits


def bench_prompts(cfg, B, L, seed):
    rng = random.Random(seed)
    return torch.tensor([[rng.randrange(cfg.V) for _ in range(L)] for _ in range(B)],
                        dtype=torch.long)


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    dtype = {"float32": torch.float32, "float64": torch.float64}[a.dtype]
    if a.verify:
        return verify(a, dtype)
    cfg, P = load_model(a.model, dtype)
    prompts = bench_prompts(cfg, a.batch, a.prompt_len, a.seed)
    tp = td = math.inf
    with torch.no_grad():
        # warm-up: one prefill (of the batch's first 16 tokens: cheap even at
        # large batches) and one decode step
        run_loop(cfg, P, prompts[:, :16], 1)
        # best of --repeats: the machine is shared, and the best run is the
        # one least disturbed by others
        for _ in range(a.repeats):
            _, p_s, d_s, _ = run_loop(cfg, P, prompts, a.decode_steps)
            tp, td = min(tp, p_s), min(td, d_s)
    print(json.dumps({
        "prefill_tokens_per_s": a.batch * a.prompt_len / tp,
        "decode_tokens_per_s": a.batch * a.decode_steps / td if a.decode_steps else None,
        "batch": a.batch, "threads": a.threads, "prompt_len": a.prompt_len,
        "decode_steps": a.decode_steps, "dtype": a.dtype, "repeats": a.repeats,
        "prefill_s": tp, "decode_s": td}))
    return 0


def verify(a, dtype):
    """The bench loop's greedy tokens against greedy_one (float64, no cache)."""
    M = a.verify_prompts
    cfg, P = load_model(a.model, dtype)
    cfg64, P64 = load_model(a.model, torch.float64)
    prompts = bench_prompts(cfg, M, a.prompt_len, a.seed)
    ok, n_tok, mm = True, 0, math.inf
    with torch.no_grad():
        got, _, _, logits = run_loop(cfg, P, prompts, a.decode_steps)
        for b in range(M):
            ids, lps, margins, _ = greedy_one(cfg64, P64, prompts[b].tolist(),
                                              a.decode_steps + 1, set())
            mine = got[b].tolist()
            mm = min(mm, min(margins))
            n_tok += len(ids)
            if mine != ids:
                j = next(i for i in range(len(ids)) if ids[i] != mine[i])
                tie = " (near-tie)" if margins[j] < 1e-4 else ""
                print(f"FAIL prompt {b}: bench loop {mine[j]} vs greedy {ids[j]} at step {j}, "
                      f"float64 margin {margins[j]:.3e}{tie}")
                ok = False
                continue
            # log-probs of the bench loop, for information (float32 vs float64)
            mlp = [float(torch.log_softmax(logits[i][b].double(), -1)[ids[i]])
                   for i in range(len(ids))]
            d = max(abs(x - y) for x, y in zip(mlp, lps))
            print(f"prompt {b}: {len(ids)} tokens equal, max |dlogp| {a.dtype} vs float64 "
                  f"{d:.2e}, min margin {min(margins):.3e}")
    print(f"generate_ref bench --verify: {M} prompts x {a.decode_steps + 1} tokens: "
          f"{'tokens equal' if ok else 'FAIL'} (min float64 margin {mm:.3e})")
    return 0 if ok else 1


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("greedy")
    g.add_argument("--model", required=True)
    g.add_argument("--input", required=True)
    g.add_argument("--max-new-tokens", type=int, required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--eos", type=int, nargs="+", action="extend")
    g.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("--ref", required=True)
    c.add_argument("--got", required=True)
    c.add_argument("--tol-lp", type=float, default=2e-5)
    b = sub.add_parser("bench")
    b.add_argument("--model", required=True)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--prompt-len", type=int, default=128)
    b.add_argument("--decode-steps", type=int, default=16)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--repeats", type=int, default=1, help="timed runs; the best is reported")
    b.add_argument("--verify", action="store_true",
                   help="check the loop's greedy tokens against `greedy`, no timing")
    b.add_argument("--verify-prompts", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "greedy":
        if a.max_new_tokens < 0:
            ap.error("--max-new-tokens must be >= 0")
        return cmd_greedy(a)
    if a.cmd == "check":
        return cmd_check(a)
    return cmd_bench(a)


if __name__ == "__main__":
    sys.exit(main())
