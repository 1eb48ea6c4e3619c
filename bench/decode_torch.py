# PyTorch side of bench/decode.ts: the same 6-layer, width-256 BERT/MED decoder (post-LN
# layers: causal self-attention, cross-attention to the image tokens, GELU MLP; embeddings
# word + position + token type 0 with LayerNorm; BertLMPredictionHead tied to the word
# embeddings), greedy decoding of `new` tokens after one [BOS] for a batch, written the way a
# PyTorch user writes a KV cache: per layer, keys/values concatenated along the length at
# each step (as HF's past_key_values), cross-attention keys/values projected once.
# Also the same greedy decoding without a cache (full recomputation at every step).
# bench/decode.ts prepends `ARGS = {...}` and reads the JSON of the last line.
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

A = ARGS  # noqa: F821 (prepended)
W, H, I, V, L, NL = A["hidden"], A["heads"], A["intermediate"], A["vocabSize"], A["maxPositions"], A["layers"]
B, NEW, LC = A["batch"], A["new"], A["imageTokens"]
DH = W // H


def attend(q, k, v, causal):
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(DH))
    if causal and q.shape[2] > 1:
        Lq, Lk = q.shape[2], k.shape[2]
        mask = torch.ones(Lq, Lk, dtype=torch.bool).tril(Lk - Lq)
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(W, W) for _ in range(4))
        self.cq, self.ck, self.cv, self.co = (nn.Linear(W, W) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(W, I), nn.Linear(I, W)
        self.ln1, self.lnc, self.ln2 = (nn.LayerNorm(W, eps=1e-12) for _ in range(3))

    def split(self, t):
        return t.view(t.shape[0], t.shape[1], H, DH).transpose(1, 2)

    def merge(self, t):
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], W)

    def forward(self, x, past, cross):
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        x = self.ln1(x + self.o(self.merge(attend(q, k, v, True))))
        x = self.lnc(x + self.co(self.merge(attend(self.split(self.cq(x)), cross[0], cross[1], False))))
        x = self.ln2(x + self.fc2(F.gelu(self.fc1(x))))
        return x, (k, v)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.word, self.pos, self.ttype = nn.Embedding(V, W), nn.Embedding(L, W), nn.Embedding(2, W)
        self.ln = nn.LayerNorm(W, eps=1e-12)
        self.layers = nn.ModuleList(Layer() for _ in range(NL))
        self.dense, self.hln, self.bias = nn.Linear(W, W), nn.LayerNorm(W, eps=1e-12), nn.Parameter(torch.zeros(V))

    def cross(self, image):
        return [(l.split(l.ck(image)), l.split(l.cv(image))) for l in self.layers]

    def forward(self, ids, offset, past, cross):
        x = self.word(ids) + self.pos.weight[offset:offset + ids.shape[1]] + self.ttype.weight[0]
        x = self.ln(x)
        new = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, None if past is None else past[i], cross[i])
            new.append(kv)
        h = self.hln(F.gelu(self.dense(x[:, -1])))
        return F.linear(h, self.word.weight, self.bias), new


def greedy_cached(model, image, bos):
    cross = model.cross(image)
    ids, past, out = bos, None, [bos]
    for step in range(NEW):
        logits, past = model(ids, step, past, cross)
        ids = logits.argmax(-1, keepdim=True)
        out.append(ids)
    return torch.cat(out, 1)


def greedy_full(model, image, bos):
    cross = model.cross(image)
    seq = bos
    for _ in range(NEW):
        logits, _ = model(seq, 0, None, cross)
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    return seq


torch.manual_seed(0)
model = Decoder().eval()
image = torch.randn(B, LC, W)
bos = torch.full((B, 1), 101, dtype=torch.long)
results = []
with torch.no_grad():
    for threads in A["threads"]:
        torch.set_num_threads(threads)
        a = greedy_cached(model, image, bos)
        times = []
        for _ in range(A["repeats"]):
            t0 = time.perf_counter()
            greedy_cached(model, image, bos)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = greedy_full(model, image, bos)
        full = time.perf_counter() - t0
        results.append({"threads": threads, "cached_s": statistics.median(times), "cached_times": times, "full_s": full,
                        "cache_matches_full": bool(torch.equal(a, b))})
print(json.dumps({"torch": torch.__version__, "results": results}))
