"""Python steps of the host-load-triage runbook: reading the diagnostics that earlier steps
collected and deciding whether the service named by the alert needs a restart.

Tested without runbookd by runbooks/test_load_tools.py (runbook.testing)."""


def parse_loadavg(text):
    """The 1, 5 and 15 minute load averages from the text of /proc/loadavg."""
    try:
        load1, load5, load15 = (float(f) for f in text.split()[:3])
    except ValueError:
        raise ValueError(f"not /proc/loadavg output: {text!r}") from None
    return load1, load5, load15


def decide(ctx):
    """Restart when the load per CPU has stayed above the threshold for 5 minutes and the
    alert names a service; otherwise say why not."""
    load1, load5, _ = parse_loadavg(ctx.steps["loadavg"].output)
    cpus = int(ctx.steps["cpus"].output.strip())
    threshold = float(ctx.params.get("max_load_per_cpu", 2.0))
    per_cpu = load5 / cpus
    service = ctx.alert.labels.get("service", "") if ctx.alert else ""
    ctx.log.info(f"load per CPU over 5 minutes is {per_cpu:.2f} (threshold {threshold})")

    if not service:
        restart, reason = False, "the alert names no service"
    elif per_cpu <= threshold:
        restart, reason = False, f"load per CPU {per_cpu:.2f} is at most {threshold}"
    elif load1 < load5:
        restart, reason = False, "load is already falling"
    else:
        restart, reason = True, f"load per CPU {per_cpu:.2f} above {threshold} and rising"
    outputs = {
        "restart": "yes" if restart else "no",
        "reason": reason,
        "load_per_cpu": round(per_cpu, 2),
    }
    if service:
        outputs["service"] = service  # absent otherwise: later steps can give a default
    return outputs
