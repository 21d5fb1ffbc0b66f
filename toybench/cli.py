"""The ``toybench`` command line. Each command is a few lines that call one library function.

Errors a user can cause (bad names, bad values, unreadable files) are raised as
``click.ClickException`` / ``click.BadParameter`` (or ``UsageError``) so that click prints one
clear line and exits non-zero, never a traceback.
"""

from __future__ import annotations

import click

from toybench import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="toybench")
def main() -> None:
    """toybench: VAEs and friends on synthetic correlated causal data, with exact ground truth."""


if __name__ == "__main__":
    main()
