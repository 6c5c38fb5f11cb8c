"""One cell, top to bottom: skip what is done -> data -> train (unless zero-shot) -> evaluate -> result.json.

Data flows one way: config -> dataset rows -> trainer -> checkpoint -> predictions -> result record. The run
directory belongs to the trained model; each evaluation of it is appended to its record, so asking a finished cell
for more datasets or prompt variants evaluates only those. A killed cell resumes: training from the last checkpoint
in `<run_dir>/trainer/`, evaluation from `predictions.jsonl`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clsrl_exp.cells import cell_state, set_aside_evals, set_aside_training, training_fingerprint
from clsrl_exp.config import RunConfig
from clsrl_exp.errors import ConfigError
from clsrl_exp.identity import train_hash, train_identity
from clsrl_exp.plan import planned_steps
from clsrl_exp.schema import Record, RunInfo, write_record

log = logging.getLogger(__name__)


def missing_training(record: Record | None) -> bool:
    return record is None or record.train is None


def run_cell(run: RunConfig, container: dict) -> dict:
    """Run one cell (or skip it): one process per cell (a lock in the run directory), stopped gracefully by
    SIGINT/SIGTERM at the next safe point."""
    from clsrl_exp import runtime

    run_dir = Path(run.run_dir)
    cs = cell_state(run, container)  # reads every split definition: a missing dataset stops here, record untouched
    if cs.state == "complete":
        log.info("skipped: %s already holds a complete result for this config", run_dir)
        return {**cs.record.to_dict(), "cell": "skipped"}
    runtime.check_tracker(run.logger)  # settings that cannot work stop here, before any data or model work
    rank, world = runtime.launch_ranks()
    if world > 1:
        import torch

        runtime.init_process_group(cuda=torch.cuda.is_available())
    with runtime.cell_lock_all_ranks(run_dir, rank, world, wait=run.wait_for_lock), \
            runtime.stop_on_signals(extra=runtime.preemption_signals()):
        cs = cell_state(run, container)  # again: a process we waited for may have done it
        if cs.state == "complete":
            log.info("skipped: %s was completed by another process", run_dir)
            return {**cs.record.to_dict(), "cell": "skipped"}
        return _run_cell(run, container, cs)


def _run_cell(run: RunConfig, container: dict, cs) -> dict:
    run_dir = Path(run.run_dir)
    thash = train_hash(container)
    record, missing = cs.record, cs.missing
    from clsrl_exp import generation, models, runtime
    from clsrl_exp.data import cell_data
    from clsrl_exp.evaluate import EvalTask, evaluate_tasks

    # the machine: every backend that cannot run here stops the cell before any work
    device = runtime.setup_device()
    grpo = run.train.kind == "grpo"
    rollout = generation.resolve_rollout(run.rollout.name, cuda=device.cuda,
                                         world_size=device.world_size) if grpo else None
    backend = generation.get_backend(run.eval.backend)
    if why := backend.unavailable(device):
        raise ConfigError(f"eval.backend={run.eval.backend} {why}")
    backend.check(run)
    fp = cs.fingerprints.get(run.dataset.name)
    if cs.stale_training is not None:  # trained on data that has changed since: set it aside, train again
        moved = set_aside_training(run_dir, run.dataset.name, cs.stale_training)
        if moved is not None:
            log.warning("training data of %s changed (fingerprint %s -> %s): the previous training and its results "
                        "moved to %s; training again", run.dataset.name, cs.stale_training[:12], fp[:12], moved)
        record = None
    elif (record is not None and record.identity_hash == thash and record.train is not None
          and training_fingerprint(record, run.dataset.name) is None):
        log.info("%s predates data fingerprints: keeping its training, recording data %s", run_dir, fp[:12])
    if (steps := planned_steps(run)) is not None and missing_training(record):
        log.info("plan: %d optimizer steps (%s x %s shots x %s classes, %s epochs, step_rule %s)", steps,
                 run.dataset.name, run.shots, run.dataset.num_classes, run.train.epochs, run.train.step_rule)
    if record is None or record.identity_hash != thash:  # a new cell (or a stale record of another model)
        info = RunInfo(method=run.method.name, model=run.model.name, dataset=run.dataset.name,
                       setting=run.setting.name, shots=run.shots, seed=run.seed)
        record = Record(status="running", run=info, identity_hash=thash, run_dir=str(run_dir),
                        identity=train_identity(container))
    record.status, record.error = "running", None
    record.data.update(cs.fingerprints)
    if device.is_main:
        record.evals = set_aside_evals(run_dir, record, cs.fingerprints)
        write_record(run_dir, record)

    # data, then the model: every bad input stops here, before a model is loaded; with several ranks, rank 0 builds
    # the shared caches (split files, the tiny model) while the others wait, then they read them
    with runtime.main_first(device.world_size):
        sets, examples = cell_data(run, missing, train=run.train.kind != "none" and record.train is None,
                                   fingerprints=cs.fingerprints)
        model_path = models.resolve_model_path(run.model, run.paths.cache)
        if run.model.warm_start is not None:
            from clsrl_exp.train.warmstart import warm_start

            model_path = warm_start(run, model_path, device)
    tasks = [EvalTask(s, spec.variant, spec.prompt, spec.eval_hash, spec.identity) for spec, s in sets]
    report_to = runtime.init_tracker(run, container, device, thash, "/".join(run_dir.parts[-5:]))
    processor = models.load_processor(model_path, run.model)
    if rollout is not None and examples:
        from clsrl_exp.train.grpo import check_rollout_inputs

        check_rollout_inputs(run, rollout, model_path, processor, examples, [t.eval_set for t in tasks])

    # train (or find the finished training)
    model = None
    if run.train.kind != "none":
        from clsrl_exp.train.fit import fit

        model, record.train, model_path = fit(run, model_path, processor, examples, device, rollout, report_to,
                                              curve_tasks=tasks, data_fingerprint=fp)
        record.train.data_fingerprint = record.train.data_fingerprint or fp  # a training from before fingerprints
        record.rollout = rollout.name if rollout is not None else None
        if device.world_size > 1:  # every rank evaluates a shard, from the checkpoint rank 0 saved
            runtime.barrier(device.world_size)
            model = None
            runtime.free_accelerator_memory()
    record.model_path = model_path

    # evaluate what is missing, append to the record
    if not backend.needs_model:
        model = None  # e.g. vLLM needs the GPU memory the trainer held
        runtime.free_accelerator_memory()
    elif model is None and tasks:
        model = models.load_model(model_path, run.model, device.cuda)
    entries = evaluate_tasks(run, backend, model, processor, tasks, thash, device, model_path)
    if not device.is_main:  # rank 0 scores the merged log and writes the record
        return {"status": "evaluated", "rank": device.rank}
    new = {e.eval_hash for e in entries}
    record.evals = [e for e in record.evals if e.eval_hash not in new] + entries
    record.status = "complete"
    write_record(run_dir, record)
    runtime.finish_tracker({f"acc/{e.dataset}/{e.split}/{e.prompt_variant}": e.accuracy for e in record.evals})
    log.info("result: %s (%d evaluations, %d new)", run_dir / "result.json", len(record.evals), len(entries))
    return {**record.to_dict(), "cell": "done"}
