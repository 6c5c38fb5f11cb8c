"""The official optimizer-step count for GRPO: every epoch is ceil(N / prompts_per_step) full steps.

TRL 1.16's `RepeatSampler` drops the last incomplete group of prompts, so an epoch is floor(N / P) steps (none at all
when N < P). The official runs (8 GPUs x 1 prompt, gradient accumulation 2) padded the last batch by wrapping around
to the start of the epoch's shuffled order (accelerate's even batches / DistributedSampler), giving
ceil(ceil(N / 8) / 2) = ceil(N / 16) steps per epoch (paper.md 3.1). `PaddedRepeatSampler` does the same for any
P and any rank count: the epoch's permutation (the same seeded permutation TRL draws) is padded with its own first
(-N) mod P entries. transformers then derives `max_steps` and the learning-rate schedule from its length.
"""

from __future__ import annotations

import math

from trl.trainer.utils import RepeatSampler


class PaddedRepeatSampler(RepeatSampler):
    """A `RepeatSampler` whose epoch holds ceil(N / batch_size) full groups (wrap-around padding).

    >>> s = PaddedRepeatSampler(list(range(5)), mini_repeat_count=2, batch_size=4, repeat_count=1, shuffle=False)
    >>> list(s), len(s)
    ([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 0, 1, 1, 2, 2], 16)
    """

    def _epoch_indexes(self) -> list[int]:
        import torch

        idx = (torch.randperm(self.num_samples, generator=self.generator).tolist() if self.shuffle
               else list(range(self.num_samples)))
        pad = (-len(idx)) % self.batch_size
        return idx + (idx * (pad // len(idx) + 1))[:pad]  # wrap around (repeatedly when N < batch_size)

    def __iter__(self):
        idx = self._epoch_indexes()
        for i in range(0, len(idx), self.batch_size):
            chunk = idx[i:i + self.batch_size]
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size) * self.batch_size * self.mini_repeat_count * \
            self.repeat_count


class OfficialStepsMixin:
    """Mix into a GRPOTrainer: its training sampler pads each epoch to whole optimizer steps (`step_rule=official`)."""

    def _get_train_sampler(self, dataset=None):
        return PaddedRepeatSampler(
            data_source=dataset if dataset is not None else self.train_dataset,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            shuffle=self.shuffle_dataset,
            seed=self.args.seed,
        )


class CompletionsPerStepMixin:
    """Mix into a GRPOTrainer: log `completions_per_step`, the completions scored for one optimizer step summed over
    every rank (16 prompts x 4 = 64 at any rank count: what the batch plan promises, read from the live trainers)."""

    def _generate_and_score_completions(self, inputs):
        import torch

        out = super()._generate_and_score_completions(inputs)
        n = torch.tensor([len(inputs)], device=self.accelerator.device)
        total = self.accelerator.gather(n).sum().item()
        self._metrics["train" if self.model.training else "eval"]["completions_per_step"].append(float(total))
        return out
