"""Generation backends: evaluation generators (`eval.backend`) and GRPO rollout backends (`rollout=`), by registry.

**Evaluation** asks a `Generator` for batches of prepared inputs and their generations; it never knows which engine
runs. A backend is a `Generator` subclass registered under a name:

    from clsrl_exp.generation import Generator, register_backend

    @register_backend("mine")                     # then: python -m clsrl_exp eval.backend=mine ...
    class MyGenerator(Generator):
        def __init__(self, run, *, model, processor, model_path, device): ...
        def batches(self, items, image_size, batch_size): ...   # -> (examples, inputs, [(example, error)])
        def generate(self, inputs): ...                           # -> (texts, generated token counts)

`eval.backend` also takes an import path (`my_backends.py:MyGenerator`, `pkg.module:MyGenerator`), so a backend
can live outside this package. Built-ins: `hf` (batched HF generate, `generation/hf.py`) and `vllm` (offline vLLM,
`generation/vllm.py`), imported only when used.

**Rollouts** are TRL's own generation during GRPO; a `Rollout` maps a name onto GRPOConfig arguments and trainer
mixins (`hf`, `vllm-colocate`, `vllm-server`; `auto` picks one at start).

Registry lookups import nothing heavy: `clsrl_exp.config.validate` checks names with them at start.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from clsrl_exp.plugins import is_import_path, load_object

if TYPE_CHECKING:
    from clsrl_exp.config import RolloutConfig, RunConfig
    from clsrl_exp.runtime import Device

Batch = tuple[list, Any, list]  # (examples, backend inputs, [(example, exception)] for unreadable images)


class Generator:
    """An evaluation backend. Subclasses implement `__init__`, `batches` and `generate`; the rest has defaults."""

    name: ClassVar[str] = "?"
    needs_model: ClassVar[bool] = True  # False: the backend loads the weights itself from `model_path`

    @classmethod
    def unavailable(cls, device: Device) -> str | None:
        """Why this backend cannot run on this machine (None: it can). Checked at start, before any work."""
        return None

    @classmethod
    def check(cls, run: RunConfig) -> None:
        """Config checks specific to this backend; raise `ConfigError` naming the key and the fix."""

    def __init__(self, run: RunConfig, *, model: Any, processor: Any, model_path: str | None, device: Device):
        raise NotImplementedError

    def batches(self, items: Sequence[tuple[Any, str]], image_size: int, batch_size: int) -> Iterator[Batch]:
        """Yield generation batches from `(example, chat text)` items (text holds one image placeholder)."""
        raise NotImplementedError

    def generate(self, inputs: Any) -> tuple[list[str], list[int]]:
        """(decoded texts, generated token counts incl. EOS) for one batch, in input order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds (engines, worker pools)."""


class Rollout:
    """A GRPO rollout backend: how TRL generates completions during training."""

    name: ClassVar[str] = "?"

    @classmethod
    def unavailable(cls, device: Device) -> str | None:
        return None

    @classmethod
    def grpo_kwargs(cls, rollout: RolloutConfig) -> dict:
        """GRPOConfig arguments selecting this backend."""
        return {"use_vllm": False}

    @classmethod
    def trainer_mixins(cls) -> tuple[type, ...]:
        """Classes mixed into the GRPOTrainer for this backend (e.g. a fix for TRL's vLLM path)."""
        return ()

    @classmethod
    def check_inputs(cls, run: RunConfig, model_path: str, processor: Any, texts: Sequence, images: Sequence) -> None:
        """Check the run's real prompts against this backend's limits (called at start, before training)."""


BACKENDS: dict[str, str | type[Generator]] = {
    "hf": "clsrl_exp.generation.hf:HFGenerator",
    "vllm": "clsrl_exp.generation.vllm:VLLMGenerator",
}
ROLLOUTS: dict[str, str | type[Rollout]] = {
    "hf": "clsrl_exp.generation.hf:HFRollout",
    "vllm-colocate": "clsrl_exp.generation.vllm:VLLMColocate",
    "vllm-server": "clsrl_exp.generation.vllm:VLLMServer",
}
AUTO = "auto"  # rollout=auto: vllm-colocate on one CUDA GPU with vllm installed, else hf (resolved at start)


def register_backend(name: str):
    """Class decorator: register an evaluation `Generator` under `name`."""

    def deco(cls: type[Generator]) -> type[Generator]:
        cls.name = name
        BACKENDS[name] = cls
        return cls

    return deco


def register_rollout(name: str):
    def deco(cls: type[Rollout]) -> type[Rollout]:
        cls.name = name
        ROLLOUTS[name] = cls
        return cls

    return deco


def _lookup(table: dict, name: str, key: str, base: type, extra: Sequence[str] = ()):
    """A registry entry by key (imported on first use) or an import path; KeyError naming the choices."""
    if name in extra:
        return name
    if is_import_path(name):
        entry = load_object(name)
    elif name in table:
        entry = table[name]
        if isinstance(entry, str):
            entry = table[name] = load_object(entry)
            entry.name = name
    else:
        raise KeyError(f"{key} must be one of {', '.join([*table, *extra])} or an import path (module:Class, "
                       f"file.py:Class); got '{name}'")
    if not (isinstance(entry, type) and issubclass(entry, base)):
        raise KeyError(f"{key}={name} is {entry!r}, not a subclass of {base.__module__}.{base.__name__}")
    return entry


def get_backend(name: str) -> type[Generator]:
    """The evaluation backend class for `eval.backend` (registry key or import path); KeyError if unknown."""
    return _lookup(BACKENDS, name, "eval.backend", Generator)


def get_rollout(name: str) -> type[Rollout] | str:
    """The rollout class for `rollout.name` (or the string 'auto'); KeyError if unknown."""
    return _lookup(ROLLOUTS, name, "rollout.name", Rollout, extra=(AUTO,))


def resolve_rollout(name: str, *, cuda: bool, world_size: int) -> type[Rollout]:
    """The rollout this run uses; `auto` picks vllm-colocate on one CUDA GPU with vllm installed, else hf. An
    explicit backend that cannot run here is a `ConfigError` naming every missing piece."""
    import logging

    from clsrl_exp.errors import ConfigError
    from clsrl_exp.runtime import Device

    log = logging.getLogger(__name__)
    device = Device(cuda=cuda, world_size=world_size)
    if name == AUTO:
        colocate = get_rollout("vllm-colocate")
        why = colocate.unavailable(device) or (None if world_size == 1 else f"{world_size} processes")
        if why is None:
            log.info("rollout=auto: vllm installed and one CUDA GPU -> vllm-colocate")
            return colocate
        log.info("rollout=auto -> hf (%s)", why)
        return get_rollout("hf")
    cls = get_rollout(name)
    why = cls.unavailable(device)
    if why:
        raise ConfigError(f"rollout={name} {why}")
    return cls
