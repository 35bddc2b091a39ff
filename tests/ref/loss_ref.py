#!/usr/bin/python3
"""loss_ref.py — an independent PyTorch (float64, autograd) reference for the
trainer loss: GRPO/PPO policy loss with clip-higher and dual clip, TIS, the
four KL estimators, the entropy bonus, per-sample and per-token reductions and
SFT, written from the semantics in DESIGN.md "The loss" and slime's loss
functions, not from quench's C code.

  loss_ref.py OUT.json [--seed S]

writes a set of cases. Each case holds a configuration, a global batch
(per-token float32-representable inputs, cu_tokens over samples, a split
point so the C side runs it as two micro-batches) and the expected
d(loss)/d(logp), d(loss)/d(entropy) and metrics, computed by autograd over
the whole batch at once.

Uses only /usr/bin/python3 with Debian's python3-torch and python3-numpy.
"""
import json
import math
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)


def f32(a):
    """Round to float32 so the C side (float inputs) sees identical values."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def reducer(masks, per_token):
    """R(x): per-sample mean of masked terms averaged over samples, or the
    masked sum over the global count of max(mask sum, 1)."""
    sums = [max(float(m.sum()), 1.0) for m in masks]
    n = len(masks)
    total = sum(sums)

    def R(x):
        out = x.new_zeros(())
        off = 0
        for m, s in zip(masks, sums):
            k = len(m)
            part = (x[off:off + k] * torch.from_numpy(m)).sum()
            out = out + (part / total if per_token else part / s / n)
            off += k
        return out

    return R


def reference(cfg, data):
    masks = []
    cu = data["cu"]
    mask_all = torch.tensor(data["loss_mask"])
    for i in range(len(cu) - 1):
        masks.append(np.array(data["loss_mask"][cu[i]:cu[i + 1]], dtype=np.float64))
    R = reducer(masks, cfg["per_token_loss"])
    logp = torch.tensor(data["logp"], requires_grad=True)
    ent = torch.tensor(data["entropy"], requires_grad=True)
    m = {}
    if cfg["type"] == "sft":
        loss = -R(logp)
        loss.backward()
        m["loss"] = loss.item()
        return logp.grad, ent.grad if ent.grad is not None else torch.zeros_like(ent), m
    A = torch.tensor(data["advantage"])
    roll = torch.tensor(data["rollout_logp"]) if data["rollout_logp"] is not None else None
    given_old = torch.tensor(data["old_logp"]) if data["old_logp"] is not None else None
    if cfg["use_rollout_logprobs"]:
        old = roll
    elif given_old is not None:
        old = given_old
    else:
        old = logp.detach()
    ppo_kl = old - logp
    ratio = torch.exp(-ppo_kl)
    l1 = -ratio * A
    l2 = -torch.clamp(ratio, 1 - cfg["eps_clip"], 1 + cfg["eps_clip_high"]) * A
    pg = torch.maximum(l1, l2)
    clipfrac = (l2 > l1).double()
    if cfg["eps_clip_c"] > 0:
        l3 = -cfg["eps_clip_c"] * A
        pg = torch.where(A < 0, torch.minimum(l3, pg), pg)
    if cfg["use_tis"]:
        tis_old = given_old if given_old is not None else logp.detach()
        raw = torch.exp(tis_old - roll)
        wt = torch.clamp(raw, cfg["tis_clip_low"], cfg["tis_clip"])
        pg = pg * wt
        m["tis"] = R(raw).item()
        m["tis_clipfrac"] = R((wt != raw).double()).item()
    pg_loss = R(pg)
    ent_loss = R(ent)
    loss = pg_loss - cfg["entropy_coef"] * ent_loss
    if cfg["use_kl_loss"]:
        ref = torch.tensor(data["ref_logp"])
        lr = logp - ref
        t = cfg["kl_type"]
        if t == "k1":
            kl = lr
        elif t == "k2":
            kl = lr ** 2 / 2
        else:
            kl = torch.exp(-lr) - 1 + lr
            if t == "low_var_kl":
                kl = torch.clamp(kl, -10, 10)
        kl_loss = R(kl)
        if cfg["kl_loss_coef"] != 0:
            loss = loss + cfg["kl_loss_coef"] * kl_loss
        m["kl_loss"] = kl_loss.item()
    if roll is not None:
        cmp = logp if cfg["use_rollout_logprobs"] else old
        m["train_rollout_logprob_abs_diff"] = R((cmp - roll).abs()).item()
    loss.backward()
    m.update(loss=loss.item(), pg_loss=pg_loss.item(), pg_clipfrac=R(clipfrac).item(),
             ppo_kl=R(ppo_kl).item(), entropy_loss=ent_loss.item())
    g_ent = ent.grad if ent.grad is not None else torch.zeros_like(ent)
    return logp.grad, g_ent, m


BASE = dict(type="policy", eps_clip=0.2, eps_clip_high=0.2, eps_clip_c=0.0, use_kl_loss=False,
            kl_loss_coef=0.0, kl_type="k1", entropy_coef=0.0, use_tis=False, tis_clip=2.0,
            tis_clip_low=0.0, use_rollout_logprobs=False, per_token_loss=False)


def make_batch(rng, lens, spread_old, spread_roll, spread_ref, with_old=True):
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    T = cu[-1]
    logp = f32(-rng.exponential(1.5, T))
    mask = (rng.random(T) > 0.25).astype(np.float64)
    # one sample fully masked if there are several
    if len(lens) > 2 and lens[1] > 0:
        mask[cu[1]:cu[2]] = 0
    adv_s = f32(rng.normal(0, 1, len(lens)))
    adv = np.concatenate([np.full(n, a) for n, a in zip(lens, adv_s)]) if T else np.zeros(0)
    d = dict(cu=cu, logp=logp.tolist(), loss_mask=mask.tolist(), advantage=f32(adv).tolist(),
             entropy=f32(rng.uniform(0.0, 3.0, T)).tolist(),
             old_logp=f32(logp + rng.normal(0, spread_old, T)).tolist() if with_old else None,
             rollout_logp=f32(logp + rng.normal(0, spread_roll, T)).tolist(),
             ref_logp=f32(logp + rng.normal(0, spread_ref, T)).tolist())
    return d


def main():
    out = sys.argv[1]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--seed" else 1234
    rng = np.random.default_rng(seed)
    lens = [7, 5, 0, 12, 3, 9, 1, 6]
    variants = [
        ("clip_higher_rollout_logprobs",
         dict(eps_clip_high=0.28, use_rollout_logprobs=True), (0.3, 0.6, 0.5)),
        ("dual_clip", dict(eps_clip_c=3.0), (1.2, 0.3, 0.5)),
        ("tis", dict(use_tis=True, tis_clip=2.0, tis_clip_low=0.5), (0.3, 0.8, 0.5)),
        ("tis_rollout_logprobs", dict(use_tis=True, use_rollout_logprobs=True,
                                      eps_clip_high=0.28), (0.3, 0.8, 0.5)),
        ("kl_k1", dict(use_kl_loss=True, kl_loss_coef=0.1, kl_type="k1"), (0.2, 0.3, 0.7)),
        ("kl_k2", dict(use_kl_loss=True, kl_loss_coef=0.1, kl_type="k2"), (0.2, 0.3, 0.7)),
        ("kl_k3", dict(use_kl_loss=True, kl_loss_coef=0.1, kl_type="k3"), (0.2, 0.3, 0.7)),
        ("kl_low_var_clamped", dict(use_kl_loss=True, kl_loss_coef=0.1, kl_type="low_var_kl"),
         (0.2, 0.3, 2.5)),
        ("kl_coef_zero_metric_only", dict(use_kl_loss=True, kl_loss_coef=0.0, kl_type="k3"),
         (0.2, 0.3, 0.7)),
        ("entropy", dict(entropy_coef=0.01), (0.2, 0.3, 0.5)),
        ("per_token", dict(per_token_loss=True, eps_clip_high=0.28), (0.4, 0.3, 0.5)),
        ("per_sample", dict(eps_clip_high=0.28), (0.4, 0.3, 0.5)),
        ("on_policy_no_old", dict(), None),
        ("sft", dict(type="sft"), (0.2, 0.3, 0.5)),
        ("sft_per_token", dict(type="sft", per_token_loss=True), (0.2, 0.3, 0.5)),
        ("everything_per_token",
         dict(eps_clip_high=0.28, eps_clip_c=2.5, use_tis=True, tis_clip=1.5, tis_clip_low=0.2,
              use_kl_loss=True, kl_loss_coef=0.05, kl_type="low_var_kl", entropy_coef=0.003,
              per_token_loss=True), (0.8, 0.6, 2.0)),
        ("everything_per_sample",
         dict(eps_clip=0.1, eps_clip_high=0.3, eps_clip_c=2.0, use_tis=True,
              use_kl_loss=True, kl_loss_coef=0.2, kl_type="k2", entropy_coef=-0.01),
         (0.8, 0.6, 1.0)),
    ]
    cases = []
    for name, over, spreads in variants:
        cfg = dict(BASE, **over)
        if spreads is None:
            data = make_batch(rng, lens, 0.0, 0.3, 0.5, with_old=False)
        else:
            data = make_batch(rng, lens, *spreads)
        g_logp, g_ent, metrics = reference(cfg, data)
        for k, v in metrics.items():
            if not math.isfinite(v):
                raise SystemExit(f"loss_ref: case {name}: metric {k} is {v}")
        cases.append(dict(name=name, cfg=cfg, data=data, split=4,
                          expect=dict(d_logp=g_logp.tolist(), d_entropy=g_ent.tolist(),
                                      metrics=metrics)))
    with open(out, "w") as f:
        json.dump(dict(cases=cases), f)


if __name__ == "__main__":
    main()
