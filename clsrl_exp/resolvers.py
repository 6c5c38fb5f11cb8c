"""OmegaConf resolvers the config files use; registered on import (`clsrl_exp.config` imports this module).

- `${clsrl_run:}`: the run directory's path under `paths.runs`, from the training identity (`clsrl_exp.identity`);
- `${clsrl_vllm_len:image_size,max_pixels,text_tokens,completion}`: vLLM's context length (`clsrl_exp.lengths`);
- `${clsrl_or:VALUE,DEFAULT}`: VALUE unless it is null (e.g. the sweep folder of a run without `sweep_name`);
- `${clsrl_grid:NAME}`: a named dataset list (`clsrl_exp.grids`) as the comma-joined string a Hydra sweeper
  parameter takes.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from clsrl_exp.grids import dataset_list
from clsrl_exp.identity import run_relpath
from clsrl_exp.lengths import vllm_max_model_length


def _run_relpath(*, _root_: DictConfig) -> str:
    container = {k: OmegaConf.to_container(_root_[k], resolve=True) if OmegaConf.is_config(_root_[k]) else _root_[k]
                 for k in _root_ if k not in ("hydra", "run_dir")}
    return run_relpath(container)


def _vllm_len(image_size, max_pixels, text_tokens, completion) -> int:
    return vllm_max_model_length(int(image_size), int(max_pixels), int(text_tokens), int(completion))


RESOLVERS = {
    "clsrl_run": _run_relpath,
    "clsrl_vllm_len": _vllm_len,
    "clsrl_grid": lambda name: ",".join(dataset_list(name)),
    "clsrl_or": lambda value, default: default if value is None else value,
}


def register_resolvers() -> None:
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
