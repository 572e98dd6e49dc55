"""The GPU suite: run on a machine with CUDA (``pytest -m gpu tests/gpu``); skipped elsewhere.

``ATTNBENCH_GPU_LOG``: a folder where the tests write their figures as JSON (the committed
output under ``reports/``).  ``ATTNBENCH_RUN_DIR``: a finished run of the README's first command
(its ``results/``) for the tests that check a default-preset run; skipped when unset.
"""

import json
import os
from pathlib import Path

import pytest
import torch

collect_ignore_glob = [] if torch.cuda.is_available() else ["test_gpu_*.py"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.gpu)


@pytest.fixture(scope="session")
def gpu_log():
    """``gpu_log(name, obj)`` writes obj to $ATTNBENCH_GPU_LOG/name.json (if set)."""
    folder = os.environ.get("ATTNBENCH_GPU_LOG")

    def write(name: str, obj) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"{name}.json").write_text(json.dumps(obj, indent=1, default=str))

    return write
