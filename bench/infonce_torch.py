# PyTorch side of bench/infonce.ts: open_clip's straightforward ClipLoss (normalise,
# logits = exp(s) * I T^T, symmetric cross-entropy), forward + backward, float32 (or under
# torch.autocast('cpu', bfloat16) when BF16). bench/infonce.ts prepends SIZES, D, THREADS,
# REPEATS and BF16; prints one JSON line.
import json
import math
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(THREADS)  # noqa: F821 (prepended)


def status_kib(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    return 0


def reset_peak_rss():
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current RSS
    except OSError:
        pass


rows = []
for B in SIZES:  # noqa: F821
    g = torch.Generator().manual_seed(0)
    img = torch.randn(B, D, generator=g).requires_grad_()  # noqa: F821
    txt = torch.randn(B, D, generator=g).requires_grad_()  # noqa: F821
    scale = torch.tensor(math.log(1 / 0.07)).requires_grad_()
    labels = torch.arange(B)

    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=BF16):  # noqa: F821
            i = F.normalize(img, dim=-1)
            t = F.normalize(txt, dim=-1)
            logits = scale.exp() * i @ t.T
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        loss.backward()
        img.grad = None
        txt.grad = None
        scale.grad = None
        return loss.item()

    repeats = 1 if B >= 16384 else REPEATS  # noqa: F821
    if B < 16384:
        step()  # warm-up
    reset_peak_rss()
    base = status_kib('VmRSS')
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    peak = status_kib('VmHWM') - base
    times.sort()
    rows.append({'B': B, 'median': times[len(times) // 2], 'min': times[0], 'times': times,
                 'peakRssMiB': peak / 1024, 'loss': loss})
print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads(), 'rows': rows}))
