"""Shared fixtures: the runbook package comes from PYTHONPATH (the build tree's package dir),
the worker executable from RUNBOOKD_PYTHON_WORKER (both set by CTest)."""

import os
import pathlib

import pytest

RUNBOOKS = pathlib.Path(__file__).parent / "runbooks"


@pytest.fixture
def worker_binary() -> str:
    path = os.environ.get("RUNBOOKD_PYTHON_WORKER")
    if not path:
        pytest.skip("RUNBOOKD_PYTHON_WORKER is not set (run through ctest)")
    return path
