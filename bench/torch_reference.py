"""PyTorch reference for bench/train_step.ts and bench/encode.ts: the same BERT shape and batch, timed on
this machine in the same session.

  train: forward of queries and passages, CLS pooling, contrastive loss over in-batch negatives,
         backward, gradient clipping, AdamW (dropout on, as in training)
  encode: passages per second of the no-grad forward (eval mode), batch --batch of --plen tokens

    python bench/torch_reference.py --mode train --layers 4 --hidden 256 --batch 32 --n 2 --qlen 32 --plen 128 --steps 5
Prints one JSON line: stepSeconds (best of --steps, after one warm-up), samplesPerSecond (train) or
passagesPerSecond (encode), matmulPeakGflops (1024x768x768 float32, best of 5), threads, torch.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

ap = argparse.ArgumentParser()
ap.add_argument("--mode", choices=["train", "encode"], default="train")
for name, default in [("layers", 4), ("hidden", 256), ("batch", 32), ("n", 2), ("qlen", 32), ("plen", 128), ("steps", 5)]:
    ap.add_argument(f"--{name}", type=int, default=default)
a = ap.parse_args()
torch.manual_seed(0)


def best_of(fn, runs):
    fn()  # warm-up: allocations and kernel selection
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


x, y = torch.randn(1024, 768), torch.randn(768, 768)
peak = 2 * 1024 * 768 * 768 / best_of(lambda: x @ y, 5) / 1e9
config = BertConfig(vocab_size=30522, hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=max(1, a.hidden // 64),
                    intermediate_size=4 * a.hidden, max_position_embeddings=512)
model = BertModel(config, add_pooling_layer=False)
out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "matmulPeakGflops": peak}

if a.mode == "train":
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    q = torch.randint(1000, 30000, (a.batch, a.qlen))
    p = torch.randint(1000, 30000, (a.batch * a.n, a.plen))
    target = torch.arange(a.batch) * a.n

    def step():
        qr = model(input_ids=q, attention_mask=torch.ones_like(q)).last_hidden_state[:, 0]
        pr = model(input_ids=p, attention_mask=torch.ones_like(p)).last_hidden_state[:, 0]
        F.cross_entropy(qr @ pr.T, target).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    sec = best_of(step, a.steps)
    out.update(stepSeconds=sec, samplesPerSecond=a.batch / sec)
else:
    model.eval()
    p = torch.randint(1000, 30000, (a.batch, a.plen))

    def encode():
        with torch.no_grad():
            model(input_ids=p, attention_mask=torch.ones_like(p)).last_hidden_state[:, 0].numpy()

    sec = best_of(encode, a.steps)
    out.update(stepSeconds=sec, passagesPerSecond=a.batch / sec)
print(json.dumps(out))
