"""Argument parsing every command shares: one-line errors, and negative durations kept for their own check."""

from __future__ import annotations

import argparse
import re

from enginebench.config import DURATION_OPTIONS
from enginebench.errors import UsageError

DEFAULT_DB = "enginebench.db"


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def attach_negative_durations(argv: list[str]) -> list[str]:
    """argparse reads `--duration -1s` as two options; pass `--duration=-1s` so that the duration's own check
    says what is wrong with it."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in DURATION_OPTIONS and re.match(r"-[\d.]", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out
