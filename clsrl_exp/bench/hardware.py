"""Measured hardware rates (matmul FLOP/s, copy bytes/s) and the floors derived from them."""

from __future__ import annotations

import time


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def timed(fn, cuda: bool, repeat: int = 3) -> float:
    """Median seconds of `repeat` calls after one warm-up."""
    fn()
    sync(cuda)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(cuda)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def matmul_rate(cuda: bool) -> float:
    """FLOP/s of a large matmul in the training dtype (bf16 on GPU, fp32 on CPU)."""
    import torch

    n = 8192 if cuda else 1024
    dt = torch.bfloat16 if cuda else torch.float32
    dev = "cuda" if cuda else "cpu"
    a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
    s = timed(lambda: a @ b, cuda, repeat=5 if cuda else 2)
    return 2 * n**3 / s


def copy_bandwidth(cuda: bool) -> float:
    """Bytes/s of a device-to-device copy, counting bytes read and written."""
    import torch

    n = (2 << 30) if cuda else (64 << 20)
    dev = "cuda" if cuda else "cpu"
    src = torch.empty(n, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    s = timed(lambda: dst.copy_(src), cuda, repeat=5)
    return 2 * n / s


def param_counts(model) -> dict:
    """Parameters of the vision tower, the language model body, and the embedding/LM head."""
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if "visual" in n)
    embed = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" in n or "lm_head" in n)
    return {"total": total, "vision": vision, "lm_body": total - vision - embed, "embed_head": embed}
