"""A PNG chart of tenant usage over time (``haive-lg tenants analytics --chart``).

matplotlib is an optional dependency (the ``notebooks`` extra): imported only
here, when a chart is asked for, and drawn on its Agg canvas without pyplot,
so no global backend or figure state of the caller's process is touched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.tenants._analytics import TenantUsage

EXTRA = "notebooks"
"""The extra that installs matplotlib."""


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigurationError(
            "writing a chart needs matplotlib, which is not installed: "
            f"pip install 'haive-langgraph[{EXTRA}]' (or pip install matplotlib)"
        ) from None
    return Figure, FigureCanvasAgg


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def write_usage_chart(
    usages: Sequence[TenantUsage],
    path: str | Path,
    *,
    since: dt.datetime,
    until: dt.datetime,
    top: int = 8,
) -> Path:
    """Write a PNG of tokens and messages per UTC day, one line per tenant (the
    ``top`` tenants by tokens; the rest summed as "others").

    Raises:
        ConfigurationError: matplotlib is not installed (names the extra).
    """
    figure_class, canvas_class = _matplotlib()
    days = _days(since.astimezone(dt.UTC).date(), until.astimezone(dt.UTC).date())
    ranked = sorted(usages, key=lambda u: (-u.total_tokens, -u.messages, u.tenant_id))
    shown, rest = ranked[:top], ranked[top:]
    series: list[tuple[str, dict[dt.date, tuple[int, int]]]] = []
    for usage in shown:
        series.append(
            (
                usage.tenant_id or "(default)",
                {d.day: (d.total_tokens, d.messages) for d in usage.daily},
            )
        )
    if rest:
        others: dict[dt.date, tuple[int, int]] = {}
        for usage in rest:
            for d in usage.daily:
                tokens, messages = others.get(d.day, (0, 0))
                others[d.day] = (tokens + d.total_tokens, messages + d.messages)
        series.append((f"others ({len(rest)})", others))
    figure = figure_class(figsize=(10, 6), dpi=100)
    canvas_class(figure)
    tokens_axes, messages_axes = figure.subplots(2, 1, sharex=True)
    for label, by_day in series:
        tokens_axes.plot(days, [by_day.get(d, (0, 0))[0] for d in days], label=label)
        messages_axes.plot(days, [by_day.get(d, (0, 0))[1] for d in days], label=label)
    tokens_axes.set_ylabel("tokens / day")
    messages_axes.set_ylabel("messages / day")
    messages_axes.set_xlabel("day (UTC)")
    tokens_axes.set_title(f"Tenant usage, {days[0].isoformat()} to {days[-1].isoformat()}")
    if series:
        tokens_axes.legend(loc="upper left", fontsize="small")
    figure.autofmt_xdate()
    target = Path(path)
    figure.savefig(target, format="png")
    return target
