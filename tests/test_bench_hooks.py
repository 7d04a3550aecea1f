"""The benchmark tools that time actorq's path step by step wrap its private methods by name:
those names must still exist (a rename in actorq would otherwise break the tool, not a test)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_every_step_w2_breakdown_times_names_an_existing_method(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("w2_breakdown", BENCH / "w2_breakdown.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "w2_breakdown", module)
    spec.loader.exec_module(module)
    missing = [f"{cls.__name__}.{name}" for cls, name, _label, _after in module.STEPS
               if not callable(getattr(cls, name, None))]
    assert module.STEPS and not missing
