"""PyTorch reference for bench/train_step.ts and bench/encode.ts: the same BERT shape and batch, timed on
this machine in the same session.

  train: forward of queries and passages, CLS pooling, contrastive loss over in-batch negatives,
         backward, gradient clipping, AdamW (dropout on, as in training); with --gc Q/P, the same step
         as the GradCache library computes it (chunked no-grad forward, representation gradients,
         replay of each chunk under its saved RNG state)
  encode: passages per second of the no-grad forward (eval mode), batch --batch of --plen tokens

  --bf16: as Hugging Face's Trainer with --bf16 on a CPU: the forward and the loss under
         torch.autocast("cpu", dtype=torch.bfloat16), the backward outside it, float32 weights and AdamW

    python bench/torch_reference.py --mode train --layers 4 --hidden 256 --batch 32 --n 2 --qlen 32 --plen 128 --steps 5 [--bf16]
Prints one JSON line, a list with one result per step kind: stepSeconds (best of --steps, after one
warm-up), samplesPerSecond (train) or passagesPerSecond (encode), matmulPeakGflops (1024x768x768 float32,
best of 5), threads, torch.
"""
import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

ap = argparse.ArgumentParser()
ap.add_argument("--mode", choices=["train", "encode"], default="train")
ap.add_argument("--gc", default="none", help="step kinds, comma-separated: none (plain) or Q/P chunk sizes; they take turns")
for name, default in [("layers", 4), ("hidden", 256), ("batch", 32), ("n", 2), ("qlen", 32), ("plen", 128), ("steps", 5)]:
    ap.add_argument(f"--{name}", type=int, default=default)
ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (Hugging Face's --bf16)")
a = ap.parse_args()
torch.manual_seed(0)
autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext


def best_of(fns, runs):
    """Seconds of the fastest of `runs` rounds of each function after a warm-up round, taking turns."""
    for fn in fns:
        fn()  # warm-up: allocations and kernel selection
    best = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


x, y = torch.randn(1024, 768), torch.randn(768, 768)
peak = 2 * 1024 * 768 * 768 / best_of([lambda: x @ y], 5)[0] / 1e9
config = BertConfig(vocab_size=30522, hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=max(1, a.hidden // 64),
                    intermediate_size=4 * a.hidden, max_position_embeddings=512)
model = BertModel(config, add_pooling_layer=False)
out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "matmulPeakGflops": peak, "precision": "bfloat16" if a.bf16 else "float32"}

if a.mode == "train":
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    q = torch.randint(1000, 30000, (a.batch, a.qlen))
    p = torch.randint(1000, 30000, (a.batch * a.n, a.plen))
    target = torch.arange(a.batch) * a.n

    def encode(ids):
        with autocast():
            return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 0]

    def step(kind):
        if kind == "none":
            with autocast():
                loss = F.cross_entropy(encode(q) @ encode(p).T, target)
            loss.backward()
        else:
            sizes = [int(x) for x in kind.split("/")]
            chunks = [list(x.split(size)) for x, size in zip((q, p), sizes)]
            # pass 1 without a graph, keeping each chunk's RNG state (GradCache's RandContext)
            states = [[] for _ in chunks]
            reps = [[] for _ in chunks]
            with torch.no_grad():
                for s, side in enumerate(chunks):
                    for c in side:
                        states[s].append(torch.get_rng_state())
                        reps[s].append(encode(c))
            qr, pr = (torch.cat(r).detach().requires_grad_() for r in reps)
            with autocast():
                loss = F.cross_entropy(qr @ pr.T, target)
            loss.backward()
            grads = [g.split(size) for g, size in zip((qr.grad, pr.grad), sizes)]
            for s, side in enumerate(chunks):
                for c, state, g in zip(side, states[s], grads[s]):
                    with torch.random.fork_rng():
                        torch.set_rng_state(state)
                        (encode(c) * g).sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    kinds = a.gc.split(",")
    secs = best_of([lambda k=k: step(k) for k in kinds], a.steps)
    results = [dict(out, gradCache=None if k == "none" else k, stepSeconds=t, samplesPerSecond=a.batch / t) for k, t in zip(kinds, secs)]
else:
    model.eval()
    p = torch.randint(1000, 30000, (a.batch, a.plen))

    def forward():
        with torch.no_grad(), autocast():
            model(input_ids=p, attention_mask=torch.ones_like(p)).last_hidden_state[:, 0].float().numpy()

    sec = best_of([forward], a.steps)[0]
    results = [dict(out, stepSeconds=sec, passagesPerSecond=a.batch / sec)]
print(json.dumps(results))
