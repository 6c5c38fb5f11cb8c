"""Run identity: which part of a resolved config defines a run's results, its hash, and the run directory.

A run directory is `<setting>/<dataset>/<method>/<model>/k<shots>-s<seed>-<hash>` under `paths.runs`: readable,
unique per identity, free of timestamps, so a sweep finds finished cells and every rank of a multi-GPU job agrees on
it. Hydra resolves `run_dir` (and `hydra.run.dir`) through the `clsrl_run` resolver registered here.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

# Keys that do not change results: where things are written, how they are logged, and speed-only knobs.
NON_IDENTITY = ("hydra", "paths", "logger", "data.root", "data.cache_dir", "eval.batch_size", "run_dir", "sweep_name")


def identity(container: dict) -> dict:
    """The part of a resolved config that defines a run's results (what a sweep compares to skip a cell)."""
    ident = json.loads(json.dumps(container, default=str))
    for key in NON_IDENTITY:
        node, *rest = key.split(".")
        if not rest:
            ident.pop(node, None)
        elif isinstance(ident.get(node), dict):
            ident[node].pop(rest[0], None)
    if ident.get("train", {}).get("kind") == "none":  # zero-shot: training settings and shots change nothing
        ident.pop("train", None)
        ident.pop("shots", None)
    return ident


def identity_hash(container: dict) -> str:
    blob = json.dumps(identity(container), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_relpath(container: dict) -> str:
    """`<setting>/<dataset>/<method>/<model>/k<shots>-s<seed>-<hash>`: readable, unique per identity."""
    c = container
    return (
        f"{c['setting']['name']}/{c['dataset']['name']}/{c['method']['name']}/{c['model']['name']}/"
        f"k{c['shots']}-s{c['seed']}-{identity_hash(c)}"
    )


def _resolver_run_relpath(*, _root_: DictConfig) -> str:
    container = {k: OmegaConf.to_container(_root_[k], resolve=True) if OmegaConf.is_config(_root_[k]) else _root_[k]
                 for k in _root_ if k not in ("hydra", "run_dir")}
    return run_relpath(container)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("clsrl_run"):
        OmegaConf.register_new_resolver("clsrl_run", _resolver_run_relpath)
    if not OmegaConf.has_resolver("clsrl_vllm_len"):
        def vllm_len(image_size, max_pixels, text_tokens, completion):
            from clsrl_exp.train.rollout import vllm_max_model_length

            return vllm_max_model_length(int(image_size), int(max_pixels), int(text_tokens), int(completion))

        OmegaConf.register_new_resolver("clsrl_vllm_len", vllm_len)


register_resolvers()
