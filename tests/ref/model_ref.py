#!/usr/bin/python3
"""model_ref.py — an independent PyTorch (float64, CPU) reference for quench's
decoder family, written from the semantics in DESIGN.md "The model" and the
Hugging Face configuration fields, not from quench's C code.

It reads the same checkpoint (config.json + safetensors, read by a small
reader below) and processes every sequence on its own (no packing), so it
also checks that quench's packing does not leak between sequences.

Subcommands:
  gen    --vocab V --seed S --out IN.jsonl [--grads]   random mixed-length inputs
  check  --model DIR --input IN.jsonl --temperature T
         --logprobs OUT.jsonl --grads GRADS.safetensors [--tol-lp 2e-5]
         [--tol-ent 2e-5] [--tol-grad 1e-4] [--case T OUT.jsonl GRADS ...]
         compares quench's outputs with the reference; exit 1 on any miss.
         With --hf the reference is transformers' AutoModelForCausalLM
         (float64, eager attention) instead of this file's model.
  bench  --config CONFIG.json --seqs N --len L --threads K --iters I
         float32 forward+backward tokens/s of the same model (random weights)

Uses only /usr/bin/python3 with Debian's python3-torch and python3-numpy.
"""
import argparse
import json
import math
import os
import random
import struct
import sys
import time

import numpy as np

torch = None  # imported lazily: `gen` must not pay for it


def _torch():
    global torch
    if torch is None:
        import torch as t
        torch = t
    return torch


# ---------------------------------------------------------------- safetensors

_DT = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


def st_read(path):
    """Returns {name: float64 numpy array} for a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = data[b:e]
        shape = info["shape"]
        dt = info["dtype"]
        if dt == "BF16":
            u16 = np.frombuffer(buf, dtype="<u2").astype(np.uint32)
            arr = (u16 << 16).view(np.float32)
        elif dt in _DT:
            arr = np.frombuffer(buf, dtype=_DT[dt])
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {dt} not handled")
        out[name] = arr.astype(np.float64).reshape(shape)
    return out


def st_read_dir(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        out = {}
        for fn in files:
            out.update(st_read(os.path.join(d, fn)))
        return out
    return st_read(os.path.join(d, "model.safetensors"))


def st_write(path, tensors):
    """float32 safetensors writer (for bench inputs; not used by check)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---------------------------------------------------------------- config

class Cfg:
    def __init__(self, c):
        mt = c.get("model_type", "")
        self.mt = mt
        self.V = c["vocab_size"]
        self.H = c["hidden_size"]
        self.L = c["num_hidden_layers"]
        self.NH = c["num_attention_heads"]
        self.NKV = c.get("num_key_value_heads", self.NH)
        self.HD = c.get("head_dim") or self.H // self.NH
        self.I = c["intermediate_size"]
        self.eps = c.get("rms_norm_eps", 1e-5 if mt == "glm4_moe" else 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        prf = c.get("partial_rotary_factor", 0.5 if mt == "glm4_moe" else 1.0)
        self.rot = int(self.HD * prf)
        self.tied = bool(c.get("tie_word_embeddings", False))
        self.bias = bool(c.get("attention_bias", False))
        # Llama / Qwen3 / Qwen3-MoE put that bias on o_proj too; GLM-4.5 does not
        self.o_bias = self.bias and mt != "glm4_moe"
        self.qk_norm = mt in ("qwen3", "qwen3_moe") or bool(c.get("use_qk_norm", False))
        self.moe = mt in ("glm4_moe", "qwen3_moe")
        if mt == "glm4_moe":
            self.E = c["n_routed_experts"]
            self.scoring = "sigmoid"
            self.first_dense = c.get("first_k_dense_replace", 1)
            self.n_shared = c.get("n_shared_experts", 1)
            self.n_group = c.get("n_group", 1)
            self.topk_group = c.get("topk_group", 1)
            self.scale = c.get("routed_scaling_factor", 1.0)
            self.norm_topk = c.get("norm_topk_prob", True)
            self.sparse_step, self.mlp_only = 1, []
        elif mt == "qwen3_moe":
            self.E = c["num_experts"]
            self.scoring = "softmax"
            self.first_dense = 0
            self.n_shared = 0
            self.n_group = self.topk_group = 1
            self.scale = 1.0
            self.norm_topk = c.get("norm_topk_prob", False)
            self.sparse_step = c.get("decoder_sparse_step", 1)
            self.mlp_only = c.get("mlp_only_layers", [])
        if self.moe:
            self.K = c["num_experts_per_tok"]
            self.MI = c["moe_intermediate_size"]

    def is_moe(self, l):
        if not self.moe or l < self.first_dense or l in self.mlp_only:
            return False
        return (l + 1) % self.sparse_step == 0


# ---------------------------------------------------------------- model

def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, rot, theta):
    """x [S, n, hd]; rotate-half on the first `rot` dims of each head."""
    half = rot // 2
    inv = theta ** (-(torch.arange(0, rot, 2, dtype=x.dtype) / rot))
    ang = pos.to(x.dtype)[:, None] * inv[None, :]  # [S, half]
    c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    a, b, rest = x[..., :half], x[..., half:rot], x[..., rot:]
    return torch.cat([a * c - b * s, b * c + a * s, rest], dim=-1)


def swiglu(x, g, u, d):
    return (torch.nn.functional.silu(x @ g.T) * (x @ u.T)) @ d.T


def topk_idx(v, k):
    """Indices of the k largest values per row; equal values go to the lower
    index. Exact ties do happen: HF masks the groups left out with 0.0, and a
    score plus a negative e_score_correction_bias can fall below that, so
    several masked experts may tie at 0.0 for the last places. torch.topk
    leaves the order of ties unspecified; quench takes the lower index."""
    return torch.sort(v, dim=-1, descending=True, stable=True).indices[:, :k]


def moe(cfg, P, pre, x):
    S = x.shape[0]
    logits = x @ P[pre + "mlp.gate.weight"].T  # [S, E]
    if cfg.scoring == "sigmoid":
        scores = torch.sigmoid(logits)
    else:
        scores = torch.softmax(logits, dim=-1)
    choice = scores.detach().clone()
    bname = pre + "mlp.gate.e_score_correction_bias"
    if bname in P:
        choice = choice + P[bname].detach()
    if cfg.n_group > 1:
        per = cfg.E // cfg.n_group
        g = choice.view(S, cfg.n_group, per)
        gscore = g.topk(2, dim=-1).values.sum(-1)  # [S, G]
        keep = torch.zeros(S, cfg.n_group, dtype=torch.bool)
        keep.scatter_(1, topk_idx(gscore, cfg.topk_group), True)
        mask = keep[:, :, None].expand(S, cfg.n_group, per).reshape(S, cfg.E)
        choice = choice.masked_fill(~mask, 0.0)
    idx = topk_idx(choice, cfg.K)  # [S, K]
    w = scores.gather(1, idx)
    if cfg.norm_topk:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    w = w * cfg.scale
    out = torch.zeros_like(x)
    for e in range(cfg.E):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        ep = pre + f"mlp.experts.{e}."
        y = swiglu(x[tok], P[ep + "gate_proj.weight"], P[ep + "up_proj.weight"],
                   P[ep + "down_proj.weight"])
        out = out.index_add(0, tok, y * w[tok, slot][:, None])
    if cfg.n_shared > 0:
        sp = pre + "mlp.shared_experts."
        out = out + swiglu(x, P[sp + "gate_proj.weight"], P[sp + "up_proj.weight"],
                           P[sp + "down_proj.weight"])
    return out


def hidden(cfg, P, tokens):
    """Final normed hidden states [S, H] of one sequence."""
    S = len(tokens)
    x = P["model.embed_tokens.weight"][torch.tensor(tokens)]
    pos = torch.arange(S)
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    grp = cfg.NH // cfg.NKV
    for l in range(cfg.L):
        pre = f"model.layers.{l}."
        h = rmsnorm(x, P[pre + "input_layernorm.weight"], cfg.eps)
        a = pre + "self_attn."
        q = h @ P[a + "q_proj.weight"].T
        k = h @ P[a + "k_proj.weight"].T
        v = h @ P[a + "v_proj.weight"].T
        if cfg.bias:
            q = q + P[a + "q_proj.bias"]
            k = k + P[a + "k_proj.bias"]
            v = v + P[a + "v_proj.bias"]
        q = q.view(S, cfg.NH, cfg.HD)
        k = k.view(S, cfg.NKV, cfg.HD)
        v = v.view(S, cfg.NKV, cfg.HD)
        if cfg.qk_norm:
            q = rmsnorm(q, P[a + "q_norm.weight"], cfg.eps)
            k = rmsnorm(k, P[a + "k_norm.weight"], cfg.eps)
        q = rope(q, pos, cfg.rot, cfg.theta)
        k = rope(k, pos, cfg.rot, cfg.theta)
        k = k.repeat_interleave(grp, dim=1)
        v = v.repeat_interleave(grp, dim=1)
        sc = torch.einsum("ihc,jhc->hij", q, k) / math.sqrt(cfg.HD)
        sc = sc.masked_fill(~causal, float("-inf"))
        o = torch.einsum("hij,jhc->ihc", torch.softmax(sc, dim=-1), v).reshape(S, cfg.NH * cfg.HD)
        x = x + o @ P[a + "o_proj.weight"].T
        if cfg.o_bias:
            x = x + P[a + "o_proj.bias"]
        h = rmsnorm(x, P[pre + "post_attention_layernorm.weight"], cfg.eps)
        if cfg.is_moe(l):
            x = x + moe(cfg, P, pre, h)
        else:
            m = pre + "mlp."
            x = x + swiglu(h, P[m + "gate_proj.weight"], P[m + "up_proj.weight"],
                           P[m + "down_proj.weight"])
    return rmsnorm(x, P["model.norm.weight"], cfg.eps)


def seq_logprobs(cfg, P, tokens, k, temp):
    h = hidden(cfg, P, tokens)
    W = P["model.embed_tokens.weight"] if cfg.tied else P["lm_head.weight"]
    z = (h[k - 1:len(tokens) - 1] @ W.T) / temp
    lsm = torch.log_softmax(z, dim=-1)
    tgt = torch.tensor(tokens[k:])
    lp = lsm.gather(1, tgt[:, None])[:, 0]
    ent = -(lsm.exp() * lsm).sum(-1)
    return lp, ent


def load_params(model_dir, dtype, requires_grad):
    raw = st_read_dir(model_dir)
    P = {}
    for n, a in raw.items():
        t = torch.tensor(a, dtype=dtype)
        if requires_grad and not n.endswith("e_score_correction_bias"):
            t.requires_grad_(True)
        P[n] = t
    return P


# ---------------------------------------------------------------- commands

def cmd_gen(a):
    rng = random.Random(a.seed)
    lens = [int(x) for x in a.lens.split(",")]
    with open(a.out, "w") as f:
        for L in lens:
            toks = [rng.randrange(a.vocab) for _ in range(L)]
            k = rng.randrange(1, L)
            rec = {"tokens": toks, "response_start": k}
            rec["dlogp"] = [rng.uniform(-1, 1) for _ in range(L - k)]
            rec["dentropy"] = [rng.uniform(-1, 1) for _ in range(L - k)]
            f.write(json.dumps(rec) + "\n")


def cmd_check(a):
    _torch()
    torch.set_num_threads(max(1, a.threads))
    cases = a.case or []
    if a.logprobs:
        cases.append([str(a.temperature), a.logprobs, a.grads or ""])
    ok = True
    for temp, lp_path, g_path in cases:
        print(f"-- {a.model}: temperature {temp}")
        if check_one(a, float(temp), lp_path, g_path) != 0:
            ok = False
    return 0 if ok else 1


def hf_setup(model_dir):
    """Hugging Face transformers' own model class on the same checkpoint
    (scripts/check-hf.sh). Returns (logprob function, {name: grad getter}).
    Checkpoint keys that transformers does not load, or parameters it had to
    initialise itself, are failures: they mean a name is wrong. Newer
    transformers fuse the per-expert tensors into experts.gate_up_proj
    [E, 2F, C] (gate rows first) and experts.down_proj [E, C, F]; their
    gradients are split back into the per-expert checkpoint names."""
    import transformers
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float64, attn_implementation="eager",
        experts_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys",
                                                           "mismatched_keys")}
    if bad:
        raise SystemExit(f"FAIL: transformers loading {model_dir}: {bad}")
    model.train(False)
    grads = {}
    for n, p in model.named_parameters():
        if n.endswith("experts.gate_up_proj"):
            pre, F = n[: -len("gate_up_proj")], p.shape[1] // 2
            for e in range(p.shape[0]):
                grads[f"{pre}{e}.gate_proj.weight"] = (lambda p=p, e=e, F=F: p.grad[e, :F])
                grads[f"{pre}{e}.up_proj.weight"] = (lambda p=p, e=e, F=F: p.grad[e, F:])
        elif n.endswith("experts.down_proj"):
            pre = n[: -len("down_proj")]
            for e in range(p.shape[0]):
                grads[f"{pre}{e}.down_proj.weight"] = (lambda p=p, e=e: p.grad[e])
        else:
            grads[n] = (lambda p=p: p.grad)

    def fn(tokens, k, temp):
        out = model(input_ids=torch.tensor([tokens]), use_cache=False)
        z = out.logits[0, k - 1:len(tokens) - 1].to(torch.float64) / temp
        lsm = torch.log_softmax(z, dim=-1)
        lp = lsm.gather(1, torch.tensor(tokens[k:])[:, None])[:, 0]
        return lp, -(lsm.exp() * lsm).sum(-1)
    return fn, grads


def check_one(a, temperature, lp_path, g_path):
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = Cfg(json.load(f))
    if a.hf:
        hf_fn, grad_of = hf_setup(a.model)
    else:
        P = load_params(a.model, torch.float64, True)
        grad_of = {n: (lambda t=t: t.grad) for n, t in P.items() if t.requires_grad}
    with open(a.input) as f:
        recs = [json.loads(l) for l in f if l.strip()]
    with open(lp_path) as f:
        outs = [json.loads(l) for l in f if l.strip()]
    if len(outs) != len(recs):
        print(f"FAIL: {len(outs)} output lines for {len(recs)} inputs")
        return 1
    ok = True
    max_lp = max_ent = 0.0
    loss = 0.0
    for r, o in zip(recs, outs):
        if a.hf:
            lp, ent = hf_fn(r["tokens"], r["response_start"], temperature)
        else:
            lp, ent = seq_logprobs(cfg, P, r["tokens"], r["response_start"], temperature)
        qlp = np.array(o["logprobs"], dtype=np.float64)
        qent = np.array(o["entropy"], dtype=np.float64)
        if qlp.shape != tuple(lp.shape) or qent.shape != tuple(ent.shape):
            print(f"FAIL: output lengths {qlp.shape}/{qent.shape}, expected {tuple(lp.shape)}")
            return 1
        if not (np.all(np.isfinite(qlp)) and np.all(np.isfinite(qent))):
            print("FAIL: non-finite quench output")
            return 1
        max_lp = max(max_lp, float(np.max(np.abs(qlp - lp.detach().numpy()), initial=0.0)))
        max_ent = max(max_ent, float(np.max(np.abs(qent - ent.detach().numpy()), initial=0.0)))
        dl = torch.tensor(r["dlogp"], dtype=torch.float64)
        de = torch.tensor(r["dentropy"], dtype=torch.float64)
        loss = loss + (dl * lp).sum() + (de * ent).sum()
    print(f"max |logprob err| {max_lp:.3e} (tol {a.tol_lp:g}), "
          f"max |entropy err| {max_ent:.3e} (tol {a.tol_ent:g})")
    if not (max_lp <= a.tol_lp and max_ent <= a.tol_ent):
        ok = False
    if g_path:
        loss.backward()
        G = st_read(g_path)
        want = set(grad_of)
        if set(G) != want:
            print(f"FAIL: gradient names differ: missing {sorted(want - set(G))[:5]}, "
                  f"extra {sorted(set(G) - want)[:5]}")
            return 1
        worst, worst_name = 0.0, ""
        for n in sorted(want):
            got = G[n]
            ref = grad_of[n]()
            ref = np.zeros(got.shape) if ref is None else ref.detach().to(torch.float64).numpy()
            if got.shape != ref.shape or not np.all(np.isfinite(got)):
                print(f"FAIL: grad {n}: shape {got.shape} vs {ref.shape} or non-finite")
                return 1
            nr = float(np.linalg.norm(ref))
            nd = float(np.linalg.norm(got - ref))
            rel = nd / nr if nr > 0 else (0.0 if nd <= 1e-12 else math.inf)
            if rel > worst:
                worst, worst_name = rel, n
        print(f"worst relative grad err {worst:.3e} at {worst_name} over {len(want)} tensors "
              f"(tol {a.tol_grad:g})")
        if not worst <= a.tol_grad:
            ok = False
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


def cmd_bench(a):
    _torch()
    torch.set_num_threads(a.threads)
    with open(a.config) as f:
        cfg = Cfg(json.load(f))
    P = load_params(a.model, torch.float32, True)
    rng = random.Random(0)
    seqs = [[rng.randrange(cfg.V) for _ in range(a.len)] for _ in range(a.seqs)]
    best = best_cpu = math.inf
    for it in range(a.iters + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = 0.0
        for s in seqs:
            lp, ent = seq_logprobs(cfg, P, s, 1, 1.0)
            loss = loss + lp.sum() + 0.1 * ent.sum()
        loss.backward()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        for t in P.values():
            t.grad = None
        if it > 0:  # the first iteration warms up
            best, best_cpu = min(best, dt), min(best_cpu, dc)
    n = a.seqs * a.len
    print(json.dumps({"tokens_per_s": n / best, "tokens_per_cpu_s": n / best_cpu,
                      "seconds": best, "cpu_seconds": best_cpu}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--vocab", type=int, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--lens", default="17,5,40,2,33")
    g.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--input", required=True)
    c.add_argument("--temperature", type=float, default=1.0)
    c.add_argument("--logprobs", help="quench logprobs output at --temperature")
    c.add_argument("--grads", help="quench grad output at --temperature")
    c.add_argument("--case", nargs=3, action="append", metavar=("T", "LOGPROBS", "GRADS"),
                   help="another temperature with its outputs (repeatable)")
    c.add_argument("--tol-lp", type=float, default=2e-5)
    c.add_argument("--tol-ent", type=float, default=2e-5)
    c.add_argument("--tol-grad", type=float, default=1e-4)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--hf", action="store_true",
                   help="compare with transformers' model classes instead (needs transformers)")
    b = sub.add_parser("bench")
    b.add_argument("--config", required=True)
    b.add_argument("--model", required=True)
    b.add_argument("--seqs", type=int, default=4)
    b.add_argument("--len", type=int, default=512)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--iters", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "gen":
        cmd_gen(a)
        return 0
    if a.cmd == "check":
        return cmd_check(a)
    return cmd_bench(a)


if __name__ == "__main__":
    sys.exit(main())
