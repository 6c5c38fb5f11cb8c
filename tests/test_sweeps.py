"""Sweeps: every grid in sweeps/ composes and lists, the smoke grid runs idempotently (submitit), a failing cell is
recorded while the others finish, the GRPO batch keeps 16 prompts x 4 completions at 1/2/8 GPUs, and every rank of a
multi-GPU launch resolves the same run directory.

The two slow tests run the real CLI on the tiny model (~1.5 min together on 2 cores); they share the session's tiny
model and synthetic data but write their runs to a fresh folder, so they never see another test's cells.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers import cli as _cli
from helpers import compose, run_config

from clsrl_exp.sweep import LEDGER, SUMMARY, list_cells

DATASETS = ["imagenet", "caltech101", "dtd", "eurosat", "food101", "oxford_flowers", "oxford_pets", "stanford_cars",
            "sun397", "ucf101", "fgvc_aircraft"]


def cli(args, root, **kw):
    """The conftest CLI runner, with a message that shows the tail of the output when it fails."""
    r = _cli(args, root, **kw)
    r.tail = f"\n--- stdout ---\n{r.stdout[-3000:]}\n--- stderr ---\n{r.stderr[-3000:]}"
    return r


def summary(root: Path, name: str) -> dict:
    return json.loads((root / "sweeps" / name / SUMMARY).read_text())


def ledger(root: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (root / "sweeps" / name / LEDGER).read_text().splitlines()]


def shared(session_root: Path, data: Path | None = None) -> list[str]:
    """Reuse the session's tiny model (paths.cache) and synthetic data; runs go under the CLI's CLSRL_OUTPUTS."""
    return [f"paths.cache={session_root / 'cache'}", f"data.root={data or session_root / 'data'}"]


# ------------------------------------------------------------------------------------------------- running sweeps
@pytest.mark.slow
def test_smoke_sweep_submitit_skips_finished_cells_and_redoes_only_missing_results(session_root, tiny_path, tmp_path):
    root = tmp_path / "out"
    args = ["+sweep=smoke", "hydra/launcher=local", *shared(session_root)]

    r = cli(args, root, timeout=500)  # 1: every cell runs, each in its own submitit process
    assert r.returncode == 0, r.tail
    assert "4 cells: 4 done, 0 skipped, 0 failed" in r.stdout, r.tail
    s = summary(root, "smoke")
    assert (s["cells"], s["done"], s["skipped"], s["failed"]) == (4, 4, 0, 0)
    assert any((root / "sweeps" / "smoke" / ".submitit").iterdir())  # the submitit launcher ran the cells
    rows = ledger(root, "smoke")
    run_dirs = {Path(x["run_dir"]) for x in rows}
    assert len(run_dirs) == 4 and all(d.is_relative_to(root / "runs") for d in run_dirs)
    for d in run_dirs:
        assert json.loads((d / "result.json").read_text())["status"] == "complete"

    r = cli(args, root, timeout=300)  # 2: nothing to do
    assert r.returncode == 0, r.tail
    assert "4 cells: 0 done, 4 skipped, 0 failed" in r.stdout, r.tail
    assert (summary(root, "smoke")["done"], summary(root, "smoke")["skipped"]) == (0, 4)

    # 3: a trained cell lost its result (e.g. killed during evaluation): only it is redone, without retraining
    cell = next(Path(x["run_dir"]) for x in rows if "method=nothink" in x["overrides"]
                and "dataset=synthetic-colors" in x["overrides"])
    train_json = cell / "train.json"
    assert train_json.exists() and (cell / "checkpoint" / "config.json").exists()
    mtime = train_json.stat().st_mtime_ns
    (cell / "result.json").unlink()
    r = cli(args, root, timeout=300)
    assert r.returncode == 0, r.tail
    assert "4 cells: 1 done, 3 skipped, 0 failed" in r.stdout, r.tail
    s = summary(root, "smoke")
    assert (s["done"], s["skipped"], s["failed"]) == (1, 3, 0)
    assert [Path(x["run_dir"]) for x in ledger(root, "smoke") if x["status"] == "done"] == [cell]
    assert train_json.stat().st_mtime_ns == mtime
    assert "training already finished" in (cell / "clsrl_exp.log").read_text()
    assert json.loads((cell / "result.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_failing_cell_is_recorded_the_others_complete_and_the_sweep_exits_nonzero(session_root, tiny_path,
                                                                                  tmp_path):
    """dtd has no data under data.root -> DataError inside those cells; basic launcher (one process)."""
    root = tmp_path / "out"
    args = ["+sweep=smoke", "dataset=synthetic-colors,dtd", *shared(session_root, data=tmp_path / "data")]
    r = cli(args, root, timeout=400)
    assert r.returncode == 1, r.tail
    s = summary(root, "smoke")
    assert (s["cells"], s["done"], s["skipped"], s["failed"]) == (4, 2, 0, 2), s
    assert "4 cells: 2 done, 0 skipped, 2 failed" in r.stdout, r.tail
    failed = s["failed_cells"]
    assert sorted(next(o for o in f["overrides"] if o.startswith("method=")) for f in failed) == [
        "method=nothink", "method=zeroshot"]
    for f in failed:
        assert "dataset=dtd" in f["overrides"]
        assert f["error"].startswith("DataError"), f["error"]
        log = Path(f["log"])
        assert log.exists() and "error" in log.read_text()
        assert f"FAILED {' '.join(f['overrides'])}" in r.stdout and f"log: {log}" in r.stdout
        rec = json.loads((Path(f["run_dir"]) / "result.json").read_text())
        assert rec["status"] == "failed" and (Path(f["run_dir"]) / "error.txt").exists()
    for row in ledger(root, "smoke"):
        if row["status"] == "done":
            assert "dataset=synthetic-colors" in row["overrides"]
            assert json.loads((Path(row["run_dir"]) / "result.json").read_text())["status"] == "complete"


# ------------------------------------------------------------------------------------------------- listing grids
def test_dry_listing_shows_the_44_paper_fewshot_cells_without_running_them(tmp_path):
    r = cli(["+sweep=paper-fewshot"], tmp_path, module="clsrl_exp.sweep", timeout=300)
    assert r.returncode == 0, r.tail  # exit 1 = some cell does not compose (its error is listed)
    assert r.stdout.rstrip().endswith("44 cells (44 pending)"), r.tail
    cells = [line.split()[2:] for line in r.stdout.splitlines() if line.startswith("#")]
    assert len(cells) == 44
    methods = ("zeroshot", "sft", "clsrl", "nothink")
    assert {tuple(sorted(c)) for c in cells} == {(f"dataset={d}", f"method={m}") for d in DATASETS for m in methods}
    assert str(tmp_path / "runs" / "fewshot" / "dtd" / "nothink" / "qwen2vl-2b" / "k4-s1-") in r.stdout
    assert not any(tmp_path.iterdir()), "the dry listing created files"

    r = cli(["+sweep=paper-fewshot", "--cfg", "hydra"], tmp_path, timeout=120)
    assert r.returncode == 0, r.tail
    assert "mode: MULTIRUN" in r.stdout
    # the dataset list is the one in clsrl_exp/grids.py (the listing above expands it to the 11 datasets)
    assert "dataset: ${clsrl_grid:paper}" in r.stdout and "method: zeroshot,sft,clsrl,nothink" in r.stdout
    assert "subdir: ../../runs/${clsrl_run:}" in r.stdout
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("overrides, n", [
    (["+sweep=paper-fewshot", "seed=1,2,3"], 132),  # a command-line sweep multiplies the file's grid
    (["+sweep=paper-base2new"], 44),
    (["+sweep=free-lunch"], 33),
    (["+sweep=shots-curve"], 180),
    (["+sweep=adaptive"], 16),
    (["+sweep=paper-open"], 15),
    (["+sweep=smoke"], 4),
    (["+sweep=sft-choices"], 4),
])
def test_every_grid_composes(overrides, n, tmp_path):
    """Counts, and a sample of cells (every swept value at least once) composed and resolved to a run dir."""
    cells = list_cells([*overrides, f"paths.output_root={tmp_path}"], sample=True)
    assert len(cells) == n
    assert len({tuple(sorted(c["overrides"])) for c in cells}) == n
    assert [c for c in cells if c["status"] == "error"] == []
    checked = [c for c in cells if c["status"] != "unchecked"]
    assert checked and all(Path(c["run_dir"]).is_relative_to(tmp_path / "runs") for c in checked)
    assert not any(tmp_path.iterdir())
    name = overrides[0].split("=")[1]
    if name == "paper-fewshot":
        assert {o for c in cells for o in c["overrides"] if o.startswith("seed=")} == {"seed=1", "seed=2", "seed=3"}
    if name == "paper-base2new":
        assert all("/base2new/" in c["run_dir"] for c in checked)
    if name == "shots-curve":
        assert {o for c in cells for o in c["overrides"] if o.startswith("shots=")} == {
            f"shots={k}" for k in (1, 2, 4, 8, 16)}
    if name == "adaptive":
        assert all("/qwen2vl-7b/" in c["run_dir"] for c in checked)
        assert {o for c in cells for o in c["overrides"] if o.startswith("method=")} == {
            "method=adaptive", "method=nothink", "method=clsrl", "method=think-after-answer"}
    if name == "paper-open":
        assert all("/open/" in c["run_dir"] and "/qwen2vl-2b/" in c["run_dir"] for c in checked)
        assert {o for c in cells for o in c["overrides"] if o.startswith("dataset=")} == {
            f"dataset={d}" for d in ("imagenet", "caltech101", "food101", "oxford_flowers", "oxford_pets")}
    if name == "smoke":
        assert all("/tiny-qwen2vl/k2-s1-" in c["run_dir"] for c in checked)
    if name == "sft-choices":  # 2 trainings (RL epochs, 1 epoch), each scored with 2 prompts in the same run dir
        by_epochs = {}
        for c in checked:
            by_epochs.setdefault(next(o for o in c["overrides"] if o.startswith("train.epochs=")), set()).add(
                c["run_dir"])
        assert len(by_epochs) == 2 and all(len(dirs) == 1 for dirs in by_epochs.values()), by_epochs
        assert len(set.union(*by_epochs.values())) == 2  # the epochs are part of the training identity


def test_free_lunch_arms_evaluate_trained_checkpoints_on_all_datasets(tmp_path):
    """Trained arms: eval.datasets=all (11 test sets); zero-shot arm: its own dataset, same run as paper-fewshot's."""
    for arm, method, datasets in (("zeroshot", "zeroshot", None), ("clsrl", "clsrl", "all"),
                                  ("nothink", "nothink", "all")):
        run, container = run_config(["+sweep=free-lunch", f"+sweep/free-lunch-arms={arm}", "dataset=dtd"], tmp_path)
        assert (run.method.name, run.eval.datasets, run.sweep_name) == (method, datasets, "free-lunch")
    free = run_config(["+sweep=free-lunch", "+sweep/free-lunch-arms=zeroshot", "dataset=dtd"], tmp_path)[0]
    paper = run_config(["+sweep=paper-fewshot", "method=zeroshot", "dataset=dtd"], tmp_path)[0]
    assert free.run_dir == paper.run_dir  # zero-shot reference cells are shared with paper-fewshot


@pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema")
def test_launcher_presets_compose_and_instantiate(tmp_path):
    """conf/hydra/launcher/{slurm,local}.yaml on top of hydra-submitit-launcher's ConfigStore entries."""
    from hydra.utils import instantiate

    cfg = compose(["+sweep=paper-fewshot", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"], tmp_path,
                  hydra=True)
    lc = cfg.hydra.launcher
    assert (lc.partition, lc.gpus_per_node, lc.tasks_per_node, lc.array_parallelism) == ("gpu", 1, 1, 8)
    assert lc.timeout_min > 0 and lc.mem_gb > 0 and lc.cpus_per_task > 0 and list(lc.setup)
    assert lc.submitit_folder == str(tmp_path / "sweeps" / "paper-fewshot" / ".submitit" / "%j")
    launcher = instantiate(lc)  # Hydra's plugin loader may import the class twice: compare names
    assert type(launcher).__name__ == "SlurmLauncher" and launcher.params["partition"] == "gpu"

    lc = compose(["+sweep=smoke", "hydra/launcher=local"], tmp_path, hydra=True).hydra.launcher
    assert (lc.gpus_per_node, lc.cpus_per_task) == (0, 1) and lc.timeout_min > 0
    assert type(instantiate(lc)).__name__ == "LocalLauncher"


def test_only_rank_zero_records_and_summarizes(tmp_path, monkeypatch):
    """Under `accelerate launch` every rank runs the sweep; ranks > 0 must not append, summarize or exit 1."""
    from omegaconf import OmegaConf

    from clsrl_exp.sweep import CellSummary

    sweep_dir = tmp_path / "sweeps" / "x"
    sweep_dir.mkdir(parents=True)
    rows = [{"status": "done", "run_dir": "a", "overrides": ["dataset=dtd"], "error": None},
            {"status": "failed", "run_dir": "b", "overrides": ["dataset=eurosat"], "error": "DataError: no data",
             "log": "b/__main__.log"}]
    (sweep_dir / LEDGER).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    monkeypatch.setenv("RANK", "1")
    CellSummary().on_multirun_start(cfg)
    CellSummary().on_multirun_end(cfg)
    assert (sweep_dir / LEDGER).exists() and not (sweep_dir / SUMMARY).exists()
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit) as exc:
        CellSummary().on_multirun_end(cfg)
    assert exc.value.code == 1
    s = json.loads((sweep_dir / SUMMARY).read_text())
    assert (s["cells"], s["done"], s["skipped"], s["failed"]) == (2, 1, 0, 1)
    assert s["failed_cells"][0]["log"] == "b/__main__.log"


# ------------------------------------------------------------------------------------------------- multi-GPU
@pytest.mark.parametrize("world, micro, per_device, accum", [
    (1, 8, 8, 8),
    (2, 8, 8, 4),
    (8, 8, 8, 1),
    (8, 4, 4, 2),  # the official launch: 8 GPUs x 1 prompt (4 completions) x grad-accum 2
])
def test_batch_derivation_keeps_16_prompts_x_4_completions(world, micro, per_device, accum, tmp_path, monkeypatch):
    """`batch_plan` and the GRPOConfig built from it. TRL takes the process count from accelerate's state
    (`TrainingArguments.world_size`, 1 on this CPU): it is patched to W so GRPOConfig's own checks and
    steps_per_generation see a W-process launch."""
    import transformers

    from clsrl_exp.runtime import Device
    from clsrl_exp.train.common import batch_plan
    from clsrl_exp.train.grpo import grpo_config

    run, _ = run_config(["method=nothink", "rollout=hf", "logger=none", f"train.micro_batch_size={micro}"], tmp_path)
    plan = batch_plan(run, world)
    assert (plan.per_device_train_batch_size, plan.gradient_accumulation_steps) == (per_device, accum)
    assert plan.completions_per_step == 16 * 4 == plan.generation_batch_size
    assert plan.prompts_per_step == 16 and plan.num_generations == 4

    monkeypatch.setattr(transformers.TrainingArguments, "world_size", property(lambda self: world))
    args, _ = grpo_config(run, Device(cuda=False, world_size=world), str(tmp_path / "trainer"), "hf", ["none"])
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (per_device, accum)
    assert args.generation_batch_size == 64 and args.num_generations == 4
    assert args.steps_per_generation == accum  # one generation batch of 16 x 4 per optimizer step
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * world == 64


def test_every_rank_resolves_the_same_run_dir(tmp_path, monkeypatch):
    """Each rank of `accelerate launch` composes its own config, at its own time: the paths must not differ."""
    import hydra.core.utils as hydra_utils

    hydra_utils.setup_globals()  # registers ${now:...}, which reads hydra.core.utils.datetime
    clock = {"t": datetime(2026, 1, 1, 12, 0, 0)}

    class FakeClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return clock["t"]

    monkeypatch.setattr(hydra_utils, "datetime", FakeClock)
    keys = ("run_dir", "hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")

    def paths(rank: int, extra=()):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "8")
        clock["t"] += timedelta(hours=1, seconds=7)
        from omegaconf import OmegaConf

        cfg = compose(["method=nothink", "dataset=dtd", *extra], tmp_path, hydra=True)
        return {k: OmegaConf.select(cfg, k) for k in keys}

    for extra in ([], ["+sweep=paper-fewshot"], ["+sweep=adaptive", "method=adaptive"]):
        first, second = paths(0, extra), paths(3, extra)
        assert first == second
        assert first["run_dir"] == first["hydra.run.dir"]
        assert first["run_dir"].startswith(str(tmp_path / "runs" / "fewshot" / "dtd"))
    # control: the fake clock does change a path that contains a timestamp
    stamped = ["hydra.run.dir=" + str(tmp_path) + "/${now:%H-%M-%S}"]
    assert paths(0, stamped)["hydra.run.dir"] != paths(1, stamped)["hydra.run.dir"]
    assert os.environ["RANK"] == "1"  # monkeypatch restores it after the test
