"""Stopping on SIGINT (Ctrl-C) and SIGTERM (a scheduler ending the job): the work stops where it is,
what is written stays, and the command says where it stopped and exits 130 or 143."""

from __future__ import annotations

import signal


class Interrupted(BaseException):
    """The run was stopped by a signal. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it."""

    def __init__(self, signal_number: int, where: str = "interrupted"):
        super().__init__(where)
        self.signal_number = signal_number
        self.where = where

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


def raise_on_sigterm() -> None:
    """Turn SIGTERM into Interrupted, so that it unwinds like Ctrl-C (finally blocks run, workers stop)."""

    def handler(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, handler)
