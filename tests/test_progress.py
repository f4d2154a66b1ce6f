"""Plan progress: done/total, the current rate and the time left; rewritten in place on a terminal, quiet
periodic lines under CI."""

from __future__ import annotations

import io

import pytest

from tenancy.catalog import load_catalog
from tenancy.progress import Meter, duration
from tests.conftest import ROOT


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_durations_read_naturally():
    assert [duration(s) for s in (0, 42.4, 59.6, 61, 3599, 3600, 7322)] == ["0s", "42s", "1m 00s", "1m 01s", "59m 59s",
                                                                             "1h 00m", "2h 02m"]


def test_on_a_terminal_one_line_is_rewritten_with_rate_and_time_left(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    clock, out = Clock(), Tty()
    meter = Meter(out, clock=clock, window=30)
    assert meter.live is True
    meter.start(1000)
    assert meter.line() == "planned 0/1,000 stacks (0%), estimating the time left"
    for _ in range(10):           # 10 stacks/s for 10 s
        clock.now += 0.1
        meter.advance()
    assert meter.line() == "planned 10/1,000 stacks (1%), 10.0 stacks/s, about 1m 39s left"
    for _ in range(40):           # then 1 stack/s: after the window the rate is the current one
        clock.now += 1
        meter.advance()
    assert meter.line() == "planned 50/1,000 stacks (5%), 1.0 stacks/s, about 15m 50s left"
    meter.say("planning 999 tenant stack(s) with 2 worker(s)")
    clock.now += 5
    meter.advance(950)
    meter.finish()
    text = out.getvalue()
    assert "\n" not in text.split("planning 999")[0], "progress lines are rewritten, not appended"
    assert "\rplanning 999 tenant stack(s) with 2 worker(s)" in text
    assert text.endswith("\n") and text.rstrip().endswith("\rplanned 1,000/1,000 stacks (100%) in 46s")
    assert text.count("\n") == 2, "one line for the message, one at the end"


@pytest.mark.parametrize("stream", [io.StringIO(), Tty()], ids=["pipe", "terminal"])
def test_under_ci_quiet_lines_at_an_interval(monkeypatch, stream):
    monkeypatch.setenv("CI", "true")
    clock = Clock()
    meter = Meter(stream, clock=clock, interval=10)
    assert meter.live is False
    meter.start(300)
    for _ in range(60):           # 5 stacks/s for 60 s
        clock.now += 1
        meter.advance(5)
    meter.finish()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == [f"planned {n}/300 stacks ({n * 100 // 300}%), 5.0 stacks/s, about {duration((300 - n) / 5)} left"
                     for n in (50, 100, 150, 200, 250)] + ["planned 300/300 stacks (100%) in 1m 00s"]


def test_the_plan_reports_each_stack_as_it_finishes():
    from tenancy import plan as planmod

    out = io.StringIO()
    meter = Meter(out, live=False, interval=0)
    result = planmod.plan(load_catalog(ROOT / "tenants.yaml"), "dev", tenants=["stark", "pied-piper", "globex"], workers=1,
                          meter=meter)
    # globex is pooled: its share is planned in its pool shard's stack; the global stack only lends its outputs
    assert [s.name for s in result.stacks] == ["dev.pool-1", "dev.pied-piper", "dev.stark"]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("planned 1/3 stacks (33%), ") and lines[1].startswith("planned 2/3 stacks (66%), ")
    assert lines[-1].startswith("planned 3/3 stacks (100%) in ")
    assert meter.done == meter.total == 3
