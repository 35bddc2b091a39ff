#!/usr/bin/python3
"""adamw_ref.py — reference for trainer/optimizer.c: torch.optim.AdamW in
float64 with two parameter groups (weight decay for tensors with ndim >= 2,
none for 1-D norms and biases), torch.nn.utils.clip_grad_norm_ on the global
norm, and the learning rate of Megatron's OptimizerParamScheduler (linear
warmup from 0, then constant / linear / cosine decay to min_lr at
lr_decay_iters, one scheduler step per optimizer step), written from those
semantics, not from quench's C code.

  adamw_ref.py OUT.json

writes cases: configuration, a tensor table, float32-representable initial
parameters and per-step gradients, and the reference parameters, lr and
pre-clip gradient norm after every step.

Uses only /usr/bin/python3 with Debian's python3-torch and python3-numpy.
"""
import json
import math
import sys

import numpy as np
import torch


def megatron_lr(cfg, t):
    lr, mn, w, d = cfg["lr"], cfg["min_lr"], cfg["warmup"], cfg["decay_iters"]
    if w > 0 and t <= w:
        return lr * t / w
    if cfg["style"] == "constant":
        return lr
    if t > d:
        return mn
    r = (t - w) / (d - w)
    c = 1 - r if cfg["style"] == "linear" else 0.5 * (math.cos(math.pi * r) + 1)
    return mn + c * (lr - mn)


def run_case(rng, name, cfg, shapes, steps, big_steps):
    tensors = []
    off = 0
    for nm, shp in shapes:
        size = int(np.prod(shp))
        tensors.append(dict(name=nm, shape=list(shp), offset=off, size=size))
        off += size
    p0 = rng.normal(0, 0.5, off).astype(np.float32).astype(np.float64)
    grads = []
    for s in range(steps):
        g = rng.normal(0, 0.05, off)
        if s in big_steps:
            g *= 100.0  # pushes the global norm past clip_grad
        grads.append(g.astype(np.float32).astype(np.float64))
    params = [torch.tensor(p0[t["offset"]:t["offset"] + t["size"]].reshape(t["shape"]),
                           dtype=torch.float64, requires_grad=True) for t in tensors]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=cfg["wd"]),
                             dict(params=no_decay, weight_decay=0.0)],
                            lr=cfg["lr"], betas=(cfg["b1"], cfg["b2"]), eps=cfg["eps"])
    exp_p, exp_lr, exp_norm = [], [], []
    for s in range(steps):
        for p, t in zip(params, tensors):
            p.grad = torch.tensor(grads[s][t["offset"]:t["offset"] + t["size"]]
                                  .reshape(t["shape"]), dtype=torch.float64)
        if cfg["clip"] > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg["clip"]).item()
        else:
            norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
        lr = megatron_lr(cfg, s)
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.step()
        exp_p.append(np.concatenate([p.detach().numpy().reshape(-1) for p in params]).tolist())
        exp_lr.append(lr)
        exp_norm.append(norm)
    return dict(name=name, cfg=cfg, tensors=tensors, params0=p0.tolist(),
                grads=[g.tolist() for g in grads],
                expect=dict(params=exp_p, lr=exp_lr, grad_norm=exp_norm))


def main():
    rng = np.random.default_rng(7)
    shapes = [("model.embed_tokens.weight", (11, 6)), ("model.norm.weight", (6,)),
              ("model.layers.0.self_attn.q_proj.bias", (6,)),
              ("model.layers.0.mlp.experts.gate", (2, 3, 6)), ("lm_head.weight", (6, 11))]
    base = dict(lr=1e-3, min_lr=1e-5, style="constant", warmup=0, decay_iters=0, wd=0.1,
                b1=0.9, b2=0.98, eps=1e-8, clip=1.0)
    cases = [
        run_case(rng, "cosine_warmup_clip", dict(base, style="cosine", warmup=2, decay_iters=6),
                 shapes, 8, {1, 4}),
        run_case(rng, "linear_decay", dict(base, style="linear", warmup=1, decay_iters=5,
                                           wd=0.01, b2=0.999), shapes, 7, {3}),
        run_case(rng, "constant_no_clip", dict(base, clip=0.0, wd=0.0), shapes, 5, {2}),
        run_case(rng, "constant_clip_always", dict(base, clip=0.05, eps=1e-6), shapes, 5, set()),
    ]
    with open(sys.argv[1], "w") as f:
        json.dump(dict(cases=cases), f)


if __name__ == "__main__":
    main()
