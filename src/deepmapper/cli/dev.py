"""``deepmapper dev``: maintenance commands for developers of the pipeline."""
from __future__ import annotations

from pathlib import Path

import click


@click.group("dev")
def dev():
    """Developer tools (generated Nextflow files)."""


@dev.command("generate")
@click.option("--check", is_flag=True, help="Only report stale files; exit 1 when any is stale.")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Pipeline root (default: the repository this package was installed from).")
def generate_cmd(check: bool, root: Path | None):
    """Regenerate the params block of nextflow.config, nextflow_schema.json and the ext.args of
    conf/modules.config from the declarations in deepmapper.config (= python -m deepmapper._dev.nfgen)."""
    from deepmapper._dev import nfgen

    args = (["--check"] if check else []) + (["--root", str(root)] if root else [])
    code = nfgen.main(args)
    if code:
        raise SystemExit(code)


COMMANDS = [dev]
