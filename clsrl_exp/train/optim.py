"""AdamW with fp32 master weights for bf16 models: bf16 speed without rounding the paper's updates away.

bf16 keeps 8 significant bits. At the paper's learning rate (1e-6) an Adam update is ~1e-6 per weight, while the
spacing of bf16 numbers near a typical weight (0.02) is ~1.2e-4: plain AdamW on bf16 weights rounds almost every
update to nothing and the model silently stops learning. Loading fp32 weights with bf16 autocast (TRL's default)
is correct but slower. Here the optimizer state holds an fp32 master copy; the update lands there and the bf16
weight is its rounding, as in DeepSpeed's bf16 mode (the official runs' setup). Gradients stay in the parameter
dtype (accumulated over gradient_accumulation_steps micro-steps).
"""

from __future__ import annotations

import math

import torch

LOW_PRECISION = (torch.bfloat16, torch.float16)


class MasterWeightAdamW(torch.optim.Optimizer):
    """Decoupled-weight-decay Adam (torch.optim.AdamW's update) on fp32 masters of low-precision parameters.

    >>> p = torch.nn.Parameter(torch.full((4,), 0.02, dtype=torch.bfloat16))
    >>> opt = MasterWeightAdamW([p], lr=1e-6)
    >>> for _ in range(200):
    ...     p.grad = torch.ones_like(p); opt.step()
    >>> round(opt.state[p]["master"][0].item(), 5)  # bf16(0.02) = 0.02002 minus 200 updates of 1e-6
    0.01982
    >>> p.dtype  # (plain torch AdamW on this bf16 weight stays at 0.02002: every update rounds away)
    torch.bfloat16
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["master"] = p.detach().to(torch.float32, copy=True)
                    st["exp_avg"] = torch.zeros_like(st["master"])
                    st["exp_avg_sq"] = torch.zeros_like(st["master"])
                st["step"] += 1
                t = st["step"].item()
                g = p.grad.to(torch.float32)
                master, m, v = st["master"], st["exp_avg"], st["exp_avg_sq"]
                if wd:
                    master.mul_(1 - lr * wd)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
                master.addcdiv_(m, denom, value=-lr / (1 - b1**t))
                p.copy_(master)
        return loss


def needs_master_weights(model) -> bool:
    return any(p.requires_grad and p.dtype in LOW_PRECISION for p in model.parameters())


class MasterWeightsMixin:
    """Mix into a transformers Trainer: bf16/fp16 models get `MasterWeightAdamW` (unless DeepSpeed handles it or
    `use_master_weights` is False); fp32 models keep the Trainer's own optimizer."""

    use_master_weights = True

    def create_optimizer(self, model=None):
        model = model if model is not None else self.model
        if (self.optimizer is None and self.use_master_weights and not getattr(self, "is_deepspeed_enabled", False)
                and needs_master_weights(model)):
            decay = set(self.get_decay_parameter_names(model))
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            groups = [{"params": [p for n, p in named if n in decay], "weight_decay": self.args.weight_decay},
                      {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
            self.optimizer = MasterWeightAdamW([g for g in groups if g["params"]], lr=self.args.learning_rate,
                                               betas=(self.args.adam_beta1, self.args.adam_beta2),
                                               eps=self.args.adam_epsilon)
            return self.optimizer
        return super().create_optimizer(model)
