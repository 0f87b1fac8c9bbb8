#!/usr/bin/env python3
"""The MPI projection table (issue 19) from the figures bench/mpi.sh measured on this machine.

usage: mpi_projection.py RUN_DIR TRAINABLE_PARAMETERS

Measured here (one machine, 2 cores), a node run as 2 ranks x 1 BLAS thread (1 rank x 2 threads is
measured beside it in the same run: bench/RESULTS.md):
  LoRS step with global batches of 8 and 4 sequences of 256 tokens: the per-sequence compute q and the
  per-step fixed part f (t = f + sequences x q);
  Wanda 50% calibration with 32 and 8 windows of 512: the serial part s and the per-window part p of a
  whole prune (t = s + windows x p), per block: divided by the 30 blocks;
  the bytes each all-reduce carries (SmolLM2: measured; 8B: from the shapes).
Modelled, N nodes of this machine's kind (2 ranks each, the all-reduce counted between nodes):
  all-reduce of S bytes on N nodes (our chain in rank order, 256 KiB chunks, then MPI_Bcast):
    t_ar(S, N) = 2 S / B + (N - 1 + ceil(log2 N)) (alpha + min(S, c) / B),   t_ar(S, 1) = 0
  LoRS step, global batch G = 64 sequences:  t = f + ceil(G / N) q + t_ar(S_grad, N) + t_ar(16, N)
  Wanda block, n = 128 windows in batches of 4:  t = s_b + 4 ceil(32 / N) p_b + sum over the 7 statistics t_ar(S_i, N)
  The 8B shape (Llama-3-8B: 32 blocks, hidden 4096, MLP 14336, 8 KV heads, vocabulary 128256) scales q and p
  by the ratio of the FLOPs per token (2 x the parameters a token multiplies: projections and head), f by
  the ratio of adapter parameters (AdamW and clipping) and s by the ratio of weight bytes.
"""
import json
import math
import statistics
import sys

run, smol_params = sys.argv[1], int(sys.argv[2])


def median_step(name):
    rows = [json.loads(l) for l in open(f"{run}/{name}/train_log.jsonl")]
    return statistics.median(r["seconds"] for r in rows[1:])


def report(name):
    return json.load(open(f"{run}/{name}.json"))


# LoRS: t = f + sequences * q at 1 rank x 2 threads.
t8, t4 = median_step("t-r2t1"), median_step("t-r2t1-b4")
q = (t8 - t4) / 4
f = max(0.0, t4 - 4 * q)
smol_grad_bytes = 4 * smol_params
# Wanda: whole prune t = s + windows * p.
w32, w8 = report("w-r2t1")["seconds"], report("w-r2t1-n8")["seconds"]
p = (w32 - w8) / 24
s = max(0.0, w8 - 8 * p)


def shapes(layers, hidden, heads, kv, head_dim, mlp, vocab):
    proj = [(hidden, heads * head_dim), (hidden, kv * head_dim), (hidden, kv * head_dim), (heads * head_dim, hidden),
            (hidden, mlp), (hidden, mlp), (mlp, hidden)]  # (in, out) of q, k, v, o, gate, up, down
    weights = layers * sum(i * o for i, o in proj)
    return dict(layers=layers, proj=proj, flops=2 * (weights + hidden * vocab), bytes=weights + hidden * vocab,
                adapter=lambda r: layers * sum((i + o) * r for i, o in proj),
                stats=[8 * i for i, _ in proj])


smol = shapes(30, 576, 9, 3, 64, 1536, 49152)
big = shapes(32, 4096, 32, 8, 128, 14336, 128256)
scale_flops = big["flops"] / smol["flops"]
scale_adapter = big["adapter"](16) / smol["adapter"](16)
scale_bytes = big["bytes"] / smol["bytes"]

NETWORKS = [("10 Gbit/s", 1.25e9, 25e-6), ("100 Gbit/s", 12.5e9, 3e-6)]
CHUNK = 1 << 18


def t_ar(size, n, bandwidth, alpha):
    if n == 1:
        return 0.0
    return 2 * size / bandwidth + (n - 1 + math.ceil(math.log2(n))) * (alpha + min(size, CHUNK) / bandwidth)


def lors_step(model, n, net):
    fixed, per_seq, grad = (f, q, smol_grad_bytes) if model == "smol" else (f * scale_adapter, q * scale_flops, 4 * big["adapter"](16))
    _, bw, alpha = net
    return fixed + math.ceil(64 / n) * per_seq + t_ar(grad, n, bw, alpha) + t_ar(16, n, bw, alpha)


def wanda_block(model, n, net):
    shape = smol if model == "smol" else big
    # s and p are whole-prune figures of SmolLM2; a block's share, then scaled to the 8B shape.
    serial = s * (scale_bytes if model == "big" else 1) / shape["layers"]
    per_window = p * (scale_flops if model == "big" else 1) / shape["layers"]
    _, bw, alpha = net
    return serial + 4 * math.ceil(32 / n) * per_window + sum(t_ar(b, n, bw, alpha) for b in shape["stats"])


print(f"projection inputs: LoRS f = {f:.3f} s per step, q = {q:.3f} s per sequence of 256 (1 node = this machine as 2 ranks x 1 thread); "
      f"Wanda s = {s:.2f} s per prune, p = {p:.3f} s per window of 512; gradient all-reduce {smol_grad_bytes / 1e6:.2f} MB (SmolLM2), "
      f"{4 * big['adapter'](16) / 1e6:.1f} MB (8B); FLOPs ratio 8B / SmolLM2 {scale_flops:.1f}")
print()
print("| nodes | SmolLM2 LoRS steps/s, 10 / 100 Gbit/s | 8B LoRS steps/s, 10 / 100 Gbit/s | SmolLM2 Wanda blocks/s, 10 / 100 Gbit/s | 8B Wanda blocks/s, 10 / 100 Gbit/s | 8B LoRS all-reduce share at 10 Gbit/s |")
print("|---|---|---|---|---|---|")
for n in [1, 2, 4, 8, 16, 32, 64]:
    cells = []
    for kind in [lambda m, net: 1 / lors_step(m, n, net), lambda m, net: 1 / wanda_block(m, n, net)]:
        for model in ["smol", "big"]:
            cells.append(" / ".join(f"{kind(model, net):.3g}" for net in NETWORKS))
    share = t_ar(4 * big["adapter"](16), n, *NETWORKS[0][1:]) / lors_step("big", n, NETWORKS[0])
    print(f"| {n} | " + " | ".join(cells) + f" | {100 * share:.1f}% |")
