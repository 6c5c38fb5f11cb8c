"""Label-free warm start for the tiny model (learncheck.md): SFT whose targets are class names drawn at random.

A random model never emits a class name, so every rule reward is 0 and GRPO has nothing to learn from. After this
SFT its sampled completions are class names (and, for the thinking arm, well-formed tags) chosen independently of
the image: chance-level accuracy, no label information. The result is cached like the tiny model itself.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, replace
from pathlib import Path

from clsrl_exp.config import RunConfig, dataset_config, method_config
from clsrl_exp.errors import ConfigError
from clsrl_exp.fileio import file_lock, sealed_dir_ok, spec_hash, use_or_rebuild
from clsrl_exp.models import load_processor
from clsrl_exp.runtime import Device

log = logging.getLogger(__name__)


def warm_examples(run: RunConfig):
    """(example, method, question, target) over every warm dataset's train split and every arm."""
    from clsrl_exp.data import ensure_dataset, examples_from_items, label_space, load_splits

    ws = run.model.warm_start
    rng = random.Random(ws.seed)
    out = []
    for name in ws.datasets:
        ds = dataset_config(name)
        ensure_dataset(ds, run.data.root)
        splits = load_splits(ds, run.data.root)
        labels = list(range(len(splits.classnames)))
        examples = examples_from_items(splits.train, splits, ds, run, labels, ws.seed, check_images=False)
        names = label_space(splits, ds, labels)  # targets: random class names of this dataset
        for arm in ws.arms:
            method = method_config(arm.method)
            for ex in examples:
                target = arm.target.replace("{x}", rng.choice(names)).replace("{y}", rng.choice(names))
                out.append((ex, method, ds.question_in(run.setting.name), target))
    rng.shuffle(out)
    return out


def warm_start(run: RunConfig, base_path: str, device: Device) -> str:
    """Return the path of the warm-started model, building it once (file lock) if needed."""
    from clsrl_exp.train.rows import sft_dataset, sft_prompt
    from clsrl_exp.train.sft import make_sft_trainer

    ws = run.model.warm_start
    # the setting shapes the warm prompts (option-list size; open-set: no list, its own question)
    spec = [asdict(ws)] if run.setting.name == "fewshot" else [asdict(ws), asdict(run.setting)]
    out = Path(run.paths.cache) / "models" / f"{Path(base_path).name}-warm-{spec_hash(*spec)}"

    def build(folder: Path) -> None:
        triples = warm_examples(run)
        rows = [(ex, sft_prompt(ex, m, q), target) for ex, m, q, target in triples]
        dataset = sft_dataset(rows, run.model.image_size)
        processor = load_processor(base_path, run.model)
        train = replace(run.train, kind="sft", learning_rate=ws.learning_rate, lr_scheduler_type="constant",
                        warmup_ratio=0.0, max_steps=ws.steps, prompts_per_step=ws.batch_size,
                        micro_batch_size=ws.batch_size, completion_only_loss=True, seed=ws.seed, save_steps=10**9,
                        logging_steps=50, extra={})
        warm_run = replace(run, train=train, method=triples[0][1])
        tmp = folder.with_name(folder.name + ".tmp")
        trainer = make_sft_trainer(warm_run, base_path, processor, dataset, device, str(tmp), ["none"],
                                   overrides={"save_strategy": "no"})
        log.info("warm start: %d label-free SFT steps on %d rows (%s)", ws.steps, len(dataset), ", ".join(ws.datasets))
        trainer.train()
        trainer.save_model(str(tmp))
        processor.save_pretrained(str(tmp))
        tmp.rename(folder)

    if device.world_size > 1 and sealed_dir_ok(out, spec) is not None:
        raise ConfigError(f"the warm-started tiny model is not built yet, and a {device.world_size}-process launch "
                          "cannot train it (its ranks would wait for each other): run the same command once as a "
                          "single process (python -m clsrl_exp ...) to build it, then launch the ranks")
    with file_lock(out.with_suffix(".lock")):  # concurrent cells build it once; a corrupt copy is rebuilt
        use_or_rebuild(out, spec, build, "warm-started model")
    return str(out)

