"""Shared click options: every config field as a flat option with the config default shown.

``--epochs`` sets ``run.epochs`` and so on; the parameter names are the ones in
``config.py`` (field metadata ``param``), which are also the Nextflow params.
Options left unset fall back to ``--config YAML`` and then to the defaults.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..config import Config, iter_fields, load_yaml

# Options that a step command defines itself (with its own meaning) are skipped here.
_OWN = {"label_key"}


def _click_type(f: dataclasses.Field, default):
    if isinstance(default, bool):
        return click.BOOL
    if isinstance(default, int):
        return click.INT
    if isinstance(default, float):
        return click.FLOAT
    return click.STRING


def config_options(func):
    """Add ``--config`` and one option per config field to a click command."""
    for sec, f in reversed(list(iter_fields())):
        param = f.metadata["param"]
        if param in _OWN:
            continue
        default = f.default
        name = param.replace("_", "-")
        if isinstance(default, bool):  # --cluster / --no-cluster; None when not given
            func = click.option(f"--{name}/--no-{name}", param, default=None,
                                help=f"{f.metadata['help']} [default: {'on' if default else 'off'}]")(func)
            continue
        func = click.option(f"--{name}", param, type=_click_type(f, default), default=None,
                            help=f"{f.metadata['help']} [default: {default}]")(func)
    func = click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        default=None, help="YAML file with sections run/backbone/augmentation/attribution/input.")(func)
    return func


def build_config(config_path: Path | None, params: dict) -> Config:
    """Config from YAML (if given) with command-line params on top; pops the params it used."""
    cfg = load_yaml(config_path) if config_path else Config()
    names = {f.metadata["param"] for _, f in iter_fields()}
    used = {k: params.pop(k) for k in list(params) if k in names}
    return cfg.with_params(used)
