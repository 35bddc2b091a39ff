#!/usr/bin/python3
"""train_step_ref.py — helpers for tests/cli/test_train_step.sh:

  train_step_ref.py gen --vocab V --seed S --lens 12,30,... --group-size G OUT.jsonl
      a GRPO batch: random tokens, response_start, groups of G, rewards,
      rollout_logprobs and loss_mask (some zeros) per response position
  train_step_ref.py cmp --tol T A.safetensors B.safetensors [...]
      every file equals the first within T relative (per tensor, max |a-b| /
      max |a|); prints the largest relative difference
  train_step_ref.py check --model DIR --ref-load DIR --batch IN.jsonl --grads G.safetensors
                          --new-model OUT_DIR --metrics M.json [loss/optimizer options]
      the end-to-end reference: model_ref.seq_logprobs (float64) per sample,
      GRPO advantages, loss_ref.reference for d(loss)/d(logp, entropy),
      chained through autograd to every parameter, compared with quench's
      saved gradient (1e-4 relative) and its metrics; then one torch.optim.AdamW step
      (adamw_ref.megatron_lr, clip_grad_norm_) on quench's gradient compared
      with quench's updated model.
  train_step_ref.py adamw2 --model DIR --new-model DIR --grads G1 G2 [--warmup W ...]
      chained train-steps (--load) equal consecutive torch.optim.AdamW steps
      (Megatron lr schedule from adamw_ref) on quench's saved gradients.

Reuses tests/ref/model_ref.py, loss_ref.py and adamw_ref.py; only Debian's
/usr/bin/python3 with python3-torch and python3-numpy.
"""
import argparse
import json
import math
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_ref  # noqa: E402


def cmd_gen(a):
    rng = random.Random(a.seed)
    lens = [int(x) for x in a.lens.split(",")]
    with open(a.out, "w") as f:
        for i, L in enumerate(lens):
            k = rng.randrange(1, L)
            n = L - k
            rec = {"tokens": [rng.randrange(a.vocab) for _ in range(L)], "response_start": k,
                   "group": i // a.group_size, "reward": rng.choice([0.0, 1.0, 0.5, -0.25])}
            rec["rollout_logprobs"] = [-rng.expovariate(0.5) for _ in range(n)]
            mask = [1 if rng.random() > 0.2 else 0 for _ in range(n)]
            if i == 1:
                mask = [0] * n  # a fully masked sample
            rec["loss_mask"] = mask
            f.write(json.dumps(rec) + "\n")


def rel_diff(a, b):
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.inf
    scale = max(float(np.max(np.abs(a))) if a.size else 0.0, 1e-30)
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


def cmd_cmp(a):
    base = model_ref.st_read(a.files[0])
    if not base or all(float(np.max(np.abs(v))) == 0.0 for v in base.values()):
        print(f"FAIL: {a.files[0]} holds no non-zero gradient")
        return 1
    for path in a.files[1:]:
        other = model_ref.st_read(path)
        if set(other) != set(base):
            print(f"FAIL: {path}: tensor names differ from {a.files[0]}")
            return 1
        worst = 0.0
        for name in base:
            d = rel_diff(base[name], other[name])
            worst = max(worst, d)
            if not d <= a.tol:
                print(f"FAIL: {path}: {name}: relative difference {d:.3e} > {a.tol}")
                return 1
        print(f"{os.path.basename(path)} vs {os.path.basename(a.files[0])}: "
              f"max relative difference {worst:.3e} (tol {a.tol})")
    return 0


def grpo(rewards, groups, std_norm):
    adv = [0.0] * len(rewards)
    members = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    for idx in members.values():
        r = np.array([rewards[i] for i in idx], dtype=np.float64)
        mean = r.mean()
        std = r.std(ddof=1) if len(idx) > 1 else 0.0
        for i in idx:
            adv[i] = (rewards[i] - mean) / (std + 1e-6) if std_norm else rewards[i] - mean
    return adv


def cmd_check(a):
    torch = model_ref._torch()
    import adamw_ref
    import loss_ref
    torch.set_num_threads(max(1, a.threads))
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = model_ref.Cfg(json.load(f))
    P = model_ref.load_params(a.model, torch.float64, True)
    Pref = model_ref.load_params(a.ref_load, torch.float64, False)
    recs = [json.loads(l) for l in open(a.batch) if l.strip()]
    lps, ents, refs = [], [], []
    cu = [0]
    for r in recs:
        lp, ent = model_ref.seq_logprobs(cfg, P, r["tokens"], r["response_start"], a.temperature)
        with torch.no_grad():
            rl, _ = model_ref.seq_logprobs(cfg, Pref, r["tokens"], r["response_start"],
                                           a.temperature)
        lps.append(lp)
        ents.append(ent)
        refs.append(rl)
        cu.append(cu[-1] + len(r["tokens"]) - r["response_start"])
    lp_all = torch.cat(lps)
    ent_all = torch.cat(ents)
    adv = grpo([r["reward"] for r in recs], [r["group"] for r in recs], True)
    lcfg = dict(loss_ref.BASE, eps_clip=a.eps_clip, eps_clip_high=a.eps_clip_high,
                eps_clip_c=a.eps_clip_c, use_kl_loss=True, kl_loss_coef=a.kl_loss_coef,
                kl_type=a.kl_loss_type, entropy_coef=a.entropy_coef, use_tis=a.use_tis,
                tis_clip=a.tis_clip, tis_clip_low=a.tis_clip_low,
                use_rollout_logprobs=a.use_rollout_logprobs, per_token_loss=a.per_token)
    data = dict(cu=cu, logp=lp_all.detach().numpy().tolist(),
                entropy=ent_all.detach().numpy().tolist(),
                loss_mask=[float(x) for r in recs for x in r["loss_mask"]],
                advantage=[adv[i] for i, r in enumerate(recs)
                           for _ in range(len(r["tokens"]) - r["response_start"])],
                old_logp=lp_all.detach().numpy().tolist(),
                rollout_logp=[x for r in recs for x in r["rollout_logprobs"]],
                ref_logp=torch.cat(refs).numpy().tolist())
    g_lp, g_ent, metrics = loss_ref.reference(lcfg, data)
    ((lp_all * g_lp).sum() + (ent_all * g_ent).sum()).backward()
    got = model_ref.st_read(a.grads)
    worst = 0.0
    ok = True
    for name, t in P.items():
        if not t.requires_grad:
            continue
        exp = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        if name not in got:
            print(f"FAIL: {name} missing from {a.grads}")
            return 1
        d = rel_diff(exp, got[name])
        worst = max(worst, d)
        if not d <= 1e-4:
            print(f"FAIL: gradient {name}: relative difference {d:.3e} > 1e-4")
            ok = False
    print(f"gradient vs reference: max relative difference {worst:.3e} (tol 1e-4)")
    m = json.load(open(a.metrics))
    keys = ["loss", "pg_loss", "pg_clipfrac", "ppo_kl", "kl_loss", "entropy_loss"]
    if a.use_tis:
        keys += ["tis", "tis_clipfrac"]
    for key in keys:
        if "train/" + key not in m:
            print(f"FAIL: train/{key} missing from the metrics line")
            ok = False
            continue
        e, g = metrics[key], m["train/" + key]
        if not (math.isfinite(g) and abs(e - g) <= 1e-4 * max(1.0, abs(e))):
            print(f"FAIL: train/{key}: quench {g} reference {e}")
            ok = False
    print(f"metrics: loss {m['train/loss']:.6g} (reference {metrics['loss']:.6g}), "
          f"pg_clipfrac {m['train/pg_clipfrac']:.4g}")
    # AdamW on quench's own (pre-clip) gradient: isolates the optimizer
    W = model_ref.st_read_dir(a.model)
    names = [n for n in P if P[n].requires_grad]
    params = [torch.tensor(W[n], dtype=torch.float64, requires_grad=True) for n in names]
    for p, n in zip(params, names):
        p.grad = torch.tensor(got[n], dtype=torch.float64)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    ocfg = dict(lr=a.lr, min_lr=0.0, warmup=0, style="constant", decay_iters=1)
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=a.weight_decay),
                             dict(params=no_decay, weight_decay=0.0)],
                            lr=adamw_ref.megatron_lr(ocfg, 0), betas=(0.9, 0.999), eps=1e-8)
    norm = torch.nn.utils.clip_grad_norm_(params, a.clip_grad).item()
    opt.step()
    if not abs(norm - m["train/grad_norm"]) <= 1e-5 * norm:
        print(f"FAIL: train/grad_norm {m['train/grad_norm']} vs {norm}")
        ok = False
    new = model_ref.st_read_dir(a.new_model)
    wu = 0.0
    for p, n in zip(params, names):
        step_ref = p.detach().numpy() - W[n]
        step_got = new[n] - W[n]
        if not np.all(np.isfinite(step_got)):
            print(f"FAIL: updated {n} not finite")
            return 1
        # the update is ~lr per element; compare it to lr (weights are fp32)
        d = float(np.max(np.abs(step_ref - step_got))) / a.lr
        wu = max(wu, d)
        if not d <= 1e-3:
            print(f"FAIL: AdamW update of {n}: max |diff| / lr = {d:.3e}")
            ok = False
    print(f"AdamW update vs torch.optim.AdamW: max |diff|/lr {wu:.3e} (tol 1e-3), "
          f"grad_norm {norm:.6g} clipped to {a.clip_grad}")
    return 0 if ok else 1


def cmd_adamw2(a):
    """Two chained train-steps (the second with --load) against two
    consecutive torch.optim.AdamW steps on quench's own gradients."""
    torch = model_ref._torch()
    import adamw_ref
    W = model_ref.st_read_dir(a.model)
    g = [model_ref.st_read(p) for p in a.grads]
    names = sorted(g[0])
    params = [torch.tensor(W[n], dtype=torch.float64, requires_grad=True) for n in names]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    ocfg = dict(lr=a.lr, min_lr=a.min_lr, warmup=a.warmup, style=a.style,
                decay_iters=a.decay_iters)
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=a.weight_decay),
                             dict(params=no_decay, weight_decay=0.0)],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    for s, gs in enumerate(g):
        for p, n in zip(params, names):
            p.grad = torch.tensor(gs[n], dtype=torch.float64)
        torch.nn.utils.clip_grad_norm_(params, a.clip_grad)
        for grp in opt.param_groups:
            grp["lr"] = adamw_ref.megatron_lr(ocfg, s)
        opt.step()
    new = model_ref.st_read_dir(a.new_model)
    worst = 0.0
    for p, n in zip(params, names):
        if not np.all(np.isfinite(new[n])):
            print(f"FAIL: {n} not finite")
            return 1
        worst = max(worst, float(np.max(np.abs(p.detach().numpy() - new[n]))) / a.lr)
    ok = worst <= 1e-3
    print(f"{'ok' if ok else 'FAIL'}: {len(g)} chained AdamW steps vs torch.optim.AdamW: "
          f"max |diff|/lr {worst:.3e} (tol 1e-3)")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--vocab", type=int, required=True)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--lens", required=True)
    g.add_argument("--group-size", type=int, default=4)
    g.add_argument("out")
    c = sub.add_parser("cmp")
    c.add_argument("--tol", type=float, required=True)
    c.add_argument("files", nargs="+")
    k = sub.add_parser("check")
    for n in ("model", "ref-load", "batch", "grads", "new-model", "metrics"):
        k.add_argument("--" + n, required=True)
    k.add_argument("--temperature", type=float, default=1.0)
    k.add_argument("--eps-clip", type=float, default=0.2)
    k.add_argument("--eps-clip-high", type=float, default=0.28)
    k.add_argument("--eps-clip-c", type=float, default=0.0)
    k.add_argument("--use-tis", action="store_true")
    k.add_argument("--tis-clip", type=float, default=2.0)
    k.add_argument("--tis-clip-low", type=float, default=0.0)
    k.add_argument("--use-rollout-logprobs", action="store_true")
    k.add_argument("--per-token", action="store_true")
    k.add_argument("--kl-loss-coef", type=float, default=0.1)
    k.add_argument("--kl-loss-type", default="low_var_kl")
    k.add_argument("--entropy-coef", type=float, default=0.01)
    k.add_argument("--lr", type=float, default=1e-3)
    k.add_argument("--weight-decay", type=float, default=0.01)
    k.add_argument("--clip-grad", type=float, default=1.0)
    k.add_argument("--threads", type=int, default=2)
    w = sub.add_parser("adamw2")
    w.add_argument("--model", required=True)
    w.add_argument("--new-model", required=True)
    w.add_argument("--grads", nargs="+", required=True)
    w.add_argument("--lr", type=float, default=1e-3)
    w.add_argument("--warmup", type=int, default=0)
    w.add_argument("--style", default="constant")
    w.add_argument("--decay-iters", type=int, default=1)
    w.add_argument("--min-lr", type=float, default=0.0)
    w.add_argument("--weight-decay", type=float, default=0.01)
    w.add_argument("--clip-grad", type=float, default=1.0)
    a = ap.parse_args()
    return {"gen": cmd_gen, "cmp": cmd_cmp, "check": cmd_check, "adamw2": cmd_adamw2}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
