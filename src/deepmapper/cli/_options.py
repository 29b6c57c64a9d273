"""Click options generated from the configuration declarations (``deepmapper.config``).

Every field of the run configuration carries its flat parameter name, type, default,
constraints, help and the steps that use it. ``@config_options("train")`` gives a step
command one option per field of that step (``--epochs`` sets ``run.epochs``), so the
command takes exactly the settings it uses, under the same names and defaults as the
Nextflow params (which deepmapper._dev.nfgen generates from the same declarations).
``@config_options()`` (no step) gives every field: ``deepmapper run`` and ``demo``.

Options left unset are None: they fall back to ``--config YAML`` and then to the
defaults. Values are checked by ``Config.validate`` (one-line ConfigError naming the
field), not by click, so the command line, YAML files and the Python API share one rule.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from deepmapper.config import Config, field_steps, iter_fields, load_yaml, value_type

_CLICK_TYPES = {"bool": click.BOOL, "int": click.INT, "float": click.FLOAT, "str": click.STRING}


class OutPath(click.Path):
    """Where a command writes: an empty value (``--outdir "$OUT"`` with OUT unset) is refused, where
    click would take it as the current folder and publish there."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path (an unset variable?): give the folder or file to write to", param, ctx)
        return super().convert(value, param, ctx)


OUT_DIR = OutPath(file_okay=False, path_type=Path)     # --outdir of every command
OUT_FILE = OutPath(dir_okay=False, path_type=Path)     # --out of every command


def option_name(param: str) -> str:
    return "--" + param.replace("_", "-")


def _help(f: dataclasses.Field) -> str:
    m = f.metadata
    default = f.default
    shown = ("on" if default else "off") if isinstance(default, bool) else ("none" if default is None else default)
    bounds = []
    for key, sign in (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<")):
        if key in m:
            bounds.append(f"{sign} {m[key]}")
    extra = f"; {', '.join(bounds)}" if bounds else ""
    return f"{m['help']} [default: {shown}{extra}]"


def config_options(*steps, own: tuple[str, ...] = ()):
    """Decorator: ``--config`` and one option per config field used by ``steps`` (all when none).

    ``own`` names params the command defines itself with its own meaning (e.g. ``label_key``).
    Also usable bare: ``@config_options`` is ``@config_options()``.
    """
    if len(steps) == 1 and callable(steps[0]):
        return config_options()(steps[0])
    own_set = set(own) | {"label_key"}

    def decorate(func):
        chosen = [(sec, f) for sec, f in iter_fields()
                  if not steps or set(field_steps(f)) & set(steps)]
        for _sec, f in reversed(chosen):
            param = f.metadata["param"]
            if param in own_set:
                continue
            name = option_name(param)
            if value_type(f) == "bool":  # --cluster / --no-cluster; None when not given
                func = click.option(f"{name}/--no-{name[2:]}", param, default=None, help=_help(f))(func)
                continue
            kind = click.Choice(f.metadata["choices"]) if "choices" in f.metadata else _CLICK_TYPES[value_type(f)]
            func = click.option(name, param, type=kind, default=None, help=_help(f))(func)
        func = click.option("--config", "config_path",
                            type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                            help="YAML file with sections input/run/backbone/augmentation/attribution/... "
                                 "(options given here win).")(func)
        return func

    return decorate


def build_config(config_path: Path | None, params: dict) -> Config:
    """Config from YAML (if given) with command-line params on top; pops the params it used."""
    cfg = load_yaml(config_path) if config_path else Config()
    names = {f.metadata["param"] for _, f in iter_fields()}
    used = {k: params.pop(k) for k in list(params) if k in names}
    return cfg.with_params(used)
