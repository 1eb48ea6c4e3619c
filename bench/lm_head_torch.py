# PyTorch side of bench/lm_head.ts: F.cross_entropy(h @ W.T, t, label_smoothing) forward
# + backward on the CPU, the way a training script writes it (materialises N x V logits).
# bench/lm_head.ts prepends `ARGS = {...}` (tokens, hidden, vocab, smoothing, threads,
# warmup, repeats) and reads the JSON on the last line.
import json
import re
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(ARGS["threads"])  # noqa: F821 (prepended)
N, H, eps = ARGS["tokens"], ARGS["hidden"], ARGS["smoothing"]  # noqa: F821


def hwm_kib():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def rss_kib():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


out = []
for V in ARGS["vocab"]:  # noqa: F821
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, H, generator=g).requires_grad_()
    w = (torch.randn(V, H, generator=g) * 0.02).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)

    def step():
        h.grad = None
        w.grad = None
        # bf16: the same mixed precision as vlmkit's matmul precision medium
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(ARGS.get("bf16", 0))):  # noqa: F821
            loss = F.cross_entropy(h @ w.t(), t, label_smoothing=eps)
        loss.backward()
        return loss.item()

    for _ in range(ARGS["warmup"]):  # noqa: F821
        step()
    h.grad = None
    w.grad = None
    base = rss_kib()
    can_reset = reset_hwm()
    times = []
    loss = 0.0
    for _ in range(ARGS["repeats"]):  # noqa: F821
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    peak = hwm_kib() if can_reset else None
    grads = (N * H + V * H) * 4
    out.append({
        "vocab": V,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times": times,
        "loss": loss,
        # peak resident memory above what was resident before the step (inputs), less the gradients
        "rss_above_inputs_bytes": None if peak is None else (peak - base) * 1024 - grads,
    })
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": out}))
