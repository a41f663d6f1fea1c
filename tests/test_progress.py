"""`pmg.progress.progress`: a bar with counts and an ETA for people, nothing under CI or in logs."""

from __future__ import annotations

import io
import sys

import pytest

from pmg.progress import progress, progress_enabled


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_person_at_a_terminal_sees_counts_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("CI", raising=False)
    assert progress_enabled()
    items = list(progress(iter(range(5)), total=5, desc="keywords clothing"))
    assert items == [0, 1, 2, 3, 4]
    shown = terminal.getvalue()
    assert "keywords clothing" in shown and "5/5" in shown
    assert "<" in shown and "it/s" in shown  # elapsed<remaining, rate
    # The total comes from len() when the iterable has one.
    terminal.truncate(0)
    assert list(progress([7, 8, 9], desc="steps")) == [7, 8, 9]
    assert "3/3" in terminal.getvalue()


@pytest.mark.parametrize(("ci", "tty"), [("true", True), ("1", True), (None, False)])
def test_quiet_under_ci_or_when_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, tty: bool
) -> None:
    stream = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert not progress_enabled()
    assert list(progress(range(4), desc="zoo sd")) == [0, 1, 2, 3]
    assert stream.getvalue() == ""
