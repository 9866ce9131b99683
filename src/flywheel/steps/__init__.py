"""The steps of an iteration, each a plain function: paths and the config in, paths out.

prepare (datasets, prompts, init model) -> generate -> verify -> curate -> train -> evaluate -> record
Every step returns a dict of metrics; `@step` times it and, given `metrics_path=`, writes the dict as JSON
(atomically), so the three drivers (KFP component, CLI, DVC stage) need not.
"""

from __future__ import annotations

import functools
import time


def step(fn):
    @functools.wraps(fn)
    def wrapper(*args, metrics_path=None, **kwargs):
        from flywheel.io import write_json

        t0 = time.perf_counter()
        metrics = fn(*args, **kwargs)
        metrics["duration_s"] = round(time.perf_counter() - t0, 2)
        if metrics_path:
            write_json(metrics, metrics_path)
        return metrics

    return wrapper
