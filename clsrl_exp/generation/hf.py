"""The HF backends: batched `model.generate` for evaluation, and TRL's own HF generation for GRPO rollouts.

Evaluation: images are decoded, resized and processed in worker processes (chunks of up to 16 items) while the GPU
generates; chunks are merged into one left-padded generation batch (trap T10: decoder-only batching needs left
padding). On a CPU there are no workers (they would compete with the model for the cores).
"""

from __future__ import annotations

from clsrl_exp.generation import Generator, Rollout, register_backend, register_rollout


class _Items:
    """Map-style dataset: (example, chat text) -> (example, text, image or the exception if unreadable)."""

    def __init__(self, items, image_size):
        self.items, self.image_size = items, image_size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from clsrl_exp.data import load_image

        ex, text = self.items[i]
        try:
            return ex, text, load_image(ex.image_path, self.image_size)
        except Exception as e:  # unreadable file: skipped and reported, not scored
            return ex, text, e


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


@register_backend("hf")
class HFGenerator(Generator):
    """Batched HF generate with left padding; CPU-side image decoding + processing overlap the GPU via workers."""

    def __init__(self, run=None, *, model, processor, model_path=None, device=None, max_new_tokens: int | None = None,
                 greedy: bool | None = None, num_workers: int | None = None, **generate_kwargs):
        from clsrl_exp.runtime import preprocessing_workers

        self.model, self.processor = model, processor
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else run.eval.max_new_tokens
        self.greedy = greedy if greedy is not None else run.eval.greedy
        self.num_workers = num_workers if num_workers is not None else (
            preprocessing_workers(device) if device is not None else 0)
        self.generate_kwargs = generate_kwargs  # e.g. a logits processor in the benchmark
        processor.tokenizer.padding_side = "left"  # trap T10

    def _collate(self, chunk):
        """Worker side: decode, resize and process a small chunk; sequences come back unpadded."""
        ok = [(ex, t, img) for ex, t, img in chunk if not isinstance(img, Exception)]
        bad = [(ex, img) for ex, _, img in chunk if isinstance(img, Exception)]
        if not ok:
            return [], None, bad
        out = self.processor(text=[t for _, t, _ in ok], images=[img for _, _, img in ok], padding=True,
                             padding_side="left", return_tensors="pt")
        keep = out["attention_mask"].bool()
        seqs = {k: [row[m] for row, m in zip(out[k], keep, strict=True)] for k in out if k not in (
            "attention_mask", "pixel_values", "image_grid_thw")}
        return [ex for ex, _, _ in ok], {"seqs": seqs, "pixel_values": out["pixel_values"],
                                         "image_grid_thw": out["image_grid_thw"]}, bad

    def _merge(self, parts):
        """Main side: left-pad the chunks' sequences into one generation batch."""
        import torch

        pad_id = self.processor.tokenizer.pad_token_id
        keys = parts[0]["seqs"].keys()
        rows = {k: [r for p in parts for r in p["seqs"][k]] for k in keys}
        width = max(len(r) for r in rows["input_ids"])
        batch = {}
        for k, seqs in rows.items():
            fill = pad_id if k == "input_ids" else 0
            batch[k] = torch.stack([torch.cat([torch.full((width - len(r),), fill, dtype=r.dtype), r]) for r in seqs])
        batch["attention_mask"] = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long),
                                                          torch.ones(len(r), dtype=torch.long)])
                                               for r in rows["input_ids"]])
        batch["pixel_values"] = torch.cat([p["pixel_values"] for p in parts])
        batch["image_grid_thw"] = torch.cat([p["image_grid_thw"] for p in parts])
        return batch

    def batches(self, items, image_size, batch_size):
        """Yield (examples, inputs, unreadable) per generation batch: consecutive runs of `batch_size` items, as the
        caller cut them (`evaluate.shard_items` relies on it). Workers prepare chunks of up to 16 items in parallel
        (one worker per whole batch of 256 would serialise preprocessing) while the GPU generates; a chunk size that
        divides the batch keeps every batch's boundary on a chunk's."""
        from torch.utils.data import DataLoader

        chunk = max(d for d in range(1, min(16, batch_size) + 1) if batch_size % d == 0) if self.num_workers \
            else batch_size
        loader = DataLoader(_Items(items, image_size), batch_size=chunk, shuffle=False,
                            num_workers=self.num_workers, collate_fn=self._collate,
                            prefetch_factor=max(2, 2 * batch_size // chunk // max(self.num_workers, 1))
                            if self.num_workers else None)
        exs, parts, bad = [], [], []
        for chunk_exs, inputs, chunk_bad in loader:
            bad += chunk_bad
            if inputs is not None:
                exs += chunk_exs
                parts.append(inputs)
            if len(exs) + len(bad) >= batch_size:  # unreadable items count: they were part of the batch
                yield exs, self._merge(parts) if parts else None, bad
                exs, parts, bad = [], [], []
        if exs or bad:
            yield exs, self._merge(parts) if parts else None, bad

    def generate(self, inputs) -> tuple[list[str], list[int]]:
        import torch

        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None} if self.greedy else {}
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling, **self.generate_kwargs)
        if was_training:
            self.model.train()
        new = out[:, inputs["input_ids"].shape[1]:].cpu()
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.processor.tokenizer.pad_token_id}
        lengths = [next((i + 1 for i, t in enumerate(row.tolist()) if t in eos), len(row)) for row in new]
        texts = self.processor.batch_decode(new, skip_special_tokens=True)
        return texts, lengths


@register_rollout("hf")
class HFRollout(Rollout):
    """GRPO rollouts with the trainer's own HF generate (what the official code did; works on CPU)."""
