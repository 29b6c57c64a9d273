"""The ``deepmapper`` command line: one click group, subcommands from sibling modules.

Each module in this package exposes ``COMMANDS`` (a list of click commands or
groups); they are registered here, so adding a step never edits this file.
Errors meant for the user (:class:`deepmapper.errors.DeepMapperError`) become a
single ``Error: ...`` line and a non-zero exit, never a traceback; so do OS errors
(no space: exit 3, permissions and other path problems: exit 2). Ctrl-C exits 130
and SIGTERM 143, each with one line, after stopping child processes (see
:mod:`deepmapper._utils.interrupt`, installed by :func:`main`).
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from deepmapper._utils.versions import __version__
from deepmapper.errors import DeepMapperError


class _UserError(click.ClickException):
    def __init__(self, err: DeepMapperError):
        super().__init__(err.format())
        self.exit_code = err.exit_code


def _interrupted(err: BaseException, name: str, code: int):
    hint = getattr(err, "resume_hint", "")
    click.echo(f"Error: interrupted by {name}" + (f"; {hint}." if hint else "."), err=True)
    return click.exceptions.Exit(code)


class _Group(click.Group):
    def invoke(self, ctx):
        from deepmapper._utils.interrupt import Terminated
        from deepmapper.results.publish import os_error

        try:
            return super().invoke(ctx)
        except DeepMapperError as err:
            raise _UserError(err) from None
        except KeyboardInterrupt as err:
            raise _interrupted(err, "Ctrl-C (SIGINT)", 130) from None
        except Terminated as err:
            raise _interrupted(err, "SIGTERM", 143) from None
        except OSError as err:
            raise _UserError(os_error(err)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="deepmapper")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool):
    """DeepMapper: which features separate labelled groups of cells or samples."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)


def _register() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    from deepmapper._utils.interrupt import install

    install()
    cli.main(args=argv, prog_name="deepmapper")
