"""Exit codes are an API: scripts and CI branch on them (documented in docs/cli.md)."""

from __future__ import annotations

import enum


class UsageError(Exception):
    """Bad arguments or configuration: exit code 2 (USAGE) with the message."""


class ExitCode(enum.IntEnum):
    OK = 0  # every job done
    JOBS_FAILED = 1  # some jobs (or input items) failed; the rest were measured
    USAGE = 2  # bad arguments, bad config, or no valid input at all
    INTERRUPTED = 130  # Ctrl-C or SIGTERM; finished results are kept, the run resumes
