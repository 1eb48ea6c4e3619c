# PyTorch side of bench/clip_train.ts: the same CLIP as vlmkit's default config, written the
# way open_clip writes it (pre-LN blocks with nn.MultiheadAttention, a conv patch embedding,
# class token, learned positions, EOT pooling, logit_scale, the symmetric cross-entropy over
# the materialised B x B logits), trained with AdamW (decay / no-decay groups) on synthetic
# batches: one step = forward, backward, optimizer step, logit-scale clamp.
# bench/clip_train.ts prepends `ARGS = {...}` (model sizes, batch, threads, warmup, repeats)
# and reads the JSON on the last line.
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

A = ARGS  # noqa: F821 (prepended)
torch.set_num_threads(A["threads"])
torch.manual_seed(0)


class QuickGELU(nn.Module):
    # open_clip's QuickGELU (OpenAI CLIP's activation)
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def activation(name):
    return {"quick_gelu": QuickGELU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU, "silu": nn.SiLU}[name]()


class Block(nn.Module):
    def __init__(self, width, heads, mlp, act):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp), activation(act), nn.Linear(mlp, width))

    def forward(self, x, mask=None):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Vision(nn.Module):
    def __init__(self, image, patch, width, layers, heads, mlp, embed, act):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        grid = image // patch
        s = width ** -0.5
        self.class_embedding = nn.Parameter(s * torch.randn(width))
        self.positional_embedding = nn.Parameter(s * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList([Block(width, heads, mlp, act) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(s * torch.randn(width, embed))

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding)
        for b in self.blocks:
            x = b(x)
        return self.ln_post(x[:, 0]) @ self.proj


class Text(nn.Module):
    def __init__(self, vocab, context, width, layers, heads, mlp, embed, act):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(context, width))
        self.blocks = nn.ModuleList([Block(width, heads, mlp, act) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(width ** -0.5 * torch.randn(width, embed))
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu(1), persistent=False)

    def forward(self, ids, eot):
        L = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:L]
        for b in self.blocks:
            x = b(x, self.mask[:L, :L])
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection


class CLIP(nn.Module):
    def __init__(self, v, t, embed):
        super().__init__()
        self.visual = Vision(v["imageSize"], v["patchSize"], v["width"], v["layers"], v["heads"], int(v["width"] * v["mlpRatio"]), embed, v["activation"])
        self.text = Text(t["vocabSize"], t["contextLength"], t["width"], t["layers"], t["heads"], int(t["width"] * t["mlpRatio"]), embed, t["activation"])
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images, ids, eot):
        i = F.normalize(self.visual(images), dim=-1)
        t = F.normalize(self.text(ids, eot), dim=-1)
        logits = self.logit_scale.exp() * i @ t.t()
        labels = torch.arange(i.shape[0])
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        return loss


v, t, B = A["vision"], A["text"], A["batch"]
model = CLIP(v, t, A["embedDim"])
decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n and "ln" not in n]
ids_decay = {id(p) for p in decay}
no_decay = [p for p in model.parameters() if id(p) not in ids_decay]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.98), eps=1e-6)

g = torch.Generator().manual_seed(1)
images = torch.randn(B, 3, v["imageSize"], v["imageSize"], generator=g)
L = t["contextLength"]
ids = torch.randint(1, 3000, (B, L), generator=g)
eot = torch.randint(3, L, (B,), generator=g)


def step():
    opt.zero_grad(set_to_none=True)
    # --precision medium: the same mixed precision on both sides (bf16 GEMMs, float32 rest)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=A.get("bf16", False)):
        loss = model(images, ids, eot)
    loss.backward()
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss.item()


for _ in range(A["warmup"]):
    step()
times = []
for _ in range(A["repeats"]):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
print(json.dumps({
    "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": B,
    "median": statistics.median(times), "min": min(times), "times": times,
    "params": sum(p.numel() for p in model.parameters()),
}))
