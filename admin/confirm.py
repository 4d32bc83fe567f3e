"""Asking before destroying: a person at a terminal is asked, anything else must have said --yes.

Without a terminal nobody can answer the question, and `echo n | tollgate-admin accounts delete X` must not
read as consent (it used to skip the question and delete), so a destructive command refuses then unless
--yes was given. A "no" at the prompt exits non-zero, so a script or a chained `&&` sees nothing happened.
"""

import argparse
import sys

from admin.errors import Aborted, UsageError

# The end of a destructive command's help: what `--help` must say about the question.
ASKS = "asks first at a terminal; without one (a script, a pipe) refuses unless --yes"
YES_HELP = "do not ask for confirmation; required when stdin is not a terminal (scripts, pipes)"


def add_yes_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-y", "--yes", action="store_true", help=YES_HELP)


def confirm(args: argparse.Namespace, action: str) -> None:
    """Return when `action` ("delete trunks/fra1") may go ahead; raise UsageError or Aborted otherwise."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {action} without confirmation: stdin is not a terminal to ask on; "
                         "pass --yes to confirm")
    # The question goes to stderr so `--json` output on stdout stays parseable.
    print(f"{action[0].upper()}{action[1:]}? [y/N] ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() not in {"y", "yes"}:
        raise Aborted("aborted: nothing was changed")
