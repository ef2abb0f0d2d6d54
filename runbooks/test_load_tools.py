"""Unit tests of load_tools.decide with runbook.testing, no runbookd needed:

    PYTHONPATH=build/dev/python:runbooks /usr/bin/python3 -m pytest runbooks/test_load_tools.py
"""

import pytest

import load_tools
from runbook.testing import make_context, run_step


def context(loadavg, cpus="2\n", labels=None, params=None):
    return make_context(
        alert_labels={"alertname": "HostHighLoad", **(labels or {})},
        params=params,
        steps={"loadavg": {"output": loadavg}, "cpus": {"output": cpus}},
    )


def test_rising_load_on_a_service_host_asks_for_a_restart():
    ctx = context("9.00 8.00 3.00 4/210 4242\n", labels={"service": "api"})
    result = run_step(load_tools.decide, ctx)
    assert result.ok
    assert result.outputs == {
        "restart": "yes",
        "reason": "load per CPU 4.00 above 2.0 and rising",
        "service": "api",
        "load_per_cpu": 4.0,
    }
    assert ctx.logs == [("info", "load per CPU over 5 minutes is 4.00 (threshold 2.0)")]


@pytest.mark.parametrize(
    "loadavg, labels, params, reason",
    [
        ("9.00 8.00 3.00 4/210 4242", {}, None, "the alert names no service"),
        ("1.00 1.50 1.00 1/90 17", {"service": "api"}, None, "load per CPU 0.75 is at most 2.0"),
        ("5.00 8.00 3.00 1/90 17", {"service": "api"}, None, "load is already falling"),
        ("9.00 8.00 3.00 4/210 4242", {"service": "api"}, {"max_load_per_cpu": 5},
         "load per CPU 4.00 is at most 5.0"),
    ],
)
def test_no_restart_and_why(loadavg, labels, params, reason):
    result = run_step(load_tools.decide, context(loadavg, labels=labels, params=params))
    assert result.ok
    assert result.outputs["restart"] == "no"
    assert result.outputs["reason"] == reason
    assert ("service" in result.outputs) == ("service" in labels)


def test_output_that_is_not_loadavg_fails_the_step_with_the_reason():
    result = run_step(load_tools.decide, context("command not found\n"))
    assert not result.ok
    assert result.exit_code == 1
    assert result.error["type"] == "ValueError"
    assert "not /proc/loadavg output" in result.error["message"]
