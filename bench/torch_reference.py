"""PyTorch reference for bench/train_step.ts: the same BERT shape, batch and step (forward of queries and
passages, CLS pooling, contrastive loss over in-batch negatives, backward, AdamW), timed on this machine.

    python bench/torch_reference.py --layers 4 --hidden 256 --batch 32 --n 2 --qlen 32 --plen 128 --steps 3
Prints one JSON line: stepSeconds (median), samplesPerSecond, threads.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

ap = argparse.ArgumentParser()
for name, default in [("layers", 4), ("hidden", 256), ("batch", 32), ("n", 2), ("qlen", 32), ("plen", 128), ("steps", 3)]:
    ap.add_argument(f"--{name}", type=int, default=default)
a = ap.parse_args()
torch.manual_seed(0)
config = BertConfig(vocab_size=30522, hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=max(1, a.hidden // 64),
                    intermediate_size=4 * a.hidden, max_position_embeddings=512)
model = BertModel(config, add_pooling_layer=False)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
q = torch.randint(1000, 30000, (a.batch, a.qlen))
p = torch.randint(1000, 30000, (a.batch * a.n, a.plen))
target = torch.arange(a.batch) * a.n
times = []
for i in range(a.steps + 1):
    t0 = time.perf_counter()
    qr = model(input_ids=q, attention_mask=torch.ones_like(q)).last_hidden_state[:, 0]
    pr = model(input_ids=p, attention_mask=torch.ones_like(p)).last_hidden_state[:, 0]
    loss = F.cross_entropy(qr @ pr.T, target)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    if i > 0:
        times.append(time.perf_counter() - t0)
sec = statistics.median(times)
print(json.dumps({"stepSeconds": sec, "samplesPerSecond": a.batch / sec, "threads": torch.get_num_threads(), "torch": torch.__version__}))
