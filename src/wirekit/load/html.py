"""The ``--html`` report: one self-contained file, charts as inline SVG, no script, no CDN."""

from __future__ import annotations

import html
import math
from typing import Any

W, H, PAD = 760, 260, 48
COLORS = {"p50": "#2f7ed8", "p99": "#d9534f", "max": "#8c8c8c", "completed": "#3a9d5d",
          "errors": "#d9534f", "spectrum": "#6f42c1"}  # fmt: skip


def _scale(lo: float, hi: float, a: float, b: float) -> Any:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _axes(x_label: str, y_label: str, y_max: float, x_ticks: list[tuple[float, str]]) -> str:
    parts = [
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">{html.escape(x_label)}</text>',
        f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">'
        f"{html.escape(y_label)}</text>",
    ]
    y = _scale(0, y_max, H - PAD, 10)
    for i in range(5):
        v = y_max * i / 4
        parts.append(f'<text x="{PAD - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
        parts.append(f'<line x1="{PAD}" y1="{y(v):.1f}" x2="{W - 10}" y2="{y(v):.1f}" '
                     'stroke="#eee"/>')  # fmt: skip
    for x, label in x_ticks:
        parts.append(f'<text x="{x:.1f}" y="{H - PAD + 16}" text-anchor="middle">{label}</text>')
    return "".join(parts)


def _svg(title: str, body: str, legend: list[str]) -> str:
    keys = "".join(f'<tspan fill="{COLORS[k]}" dx="12">&#9632; {k}</tspan>' for k in legend)
    return (f'<figure><figcaption>{html.escape(title)}</figcaption>'
            f'<svg class="chart" role="img" aria-label="{html.escape(title)}" '
            f'viewBox="0 0 {W} {H}" width="{W}" height="{H}">{body}'
            f'<text x="{PAD}" y="12">{keys}</text></svg></figure>')  # fmt: skip


def latency_chart(timeline: list[dict[str, Any]]) -> str:
    n = max(1, len(timeline))
    y_max = max([row["max"] for row in timeline] + [0.001])
    x = _scale(0, max(1, n - 1), PAD, W - 10)
    y = _scale(0, y_max, H - PAD, 10)
    lines = []
    for key in ("max", "p99", "p50"):
        points = " ".join(f"{x(i):.1f},{y(row[key]):.1f}" for i, row in enumerate(timeline))
        lines.append(f'<polyline class="series" data-series="{key}" fill="none" '
                     f'stroke="{COLORS[key]}" stroke-width="2" points="{points}"/>')  # fmt: skip
    ticks = [(x(i), str(i)) for i in range(0, n, max(1, n // 10))]
    return _svg(
        "Latency over time (ms, corrected)",
        _axes("second", "ms", y_max, ticks) + "".join(lines),
        ["p50", "p99", "max"],
    )


def throughput_chart(timeline: list[dict[str, Any]]) -> str:
    n = max(1, len(timeline))
    y_max = max([row["completed"] + row["errors"] for row in timeline] + [1])
    y = _scale(0, y_max, H - PAD, 10)
    slot = (W - 10 - PAD) / n
    bars = []
    for i, row in enumerate(timeline):
        x0 = PAD + i * slot + 1
        ok_top, err_top = y(row["completed"]), y(row["completed"] + row["errors"])
        width = max(1, slot - 2)
        bars.append(f'<rect class="bar" x="{x0:.1f}" y="{ok_top:.1f}" width="{width:.1f}"'
                    f' height="{H - PAD - ok_top:.1f}" fill="{COLORS["completed"]}"/>')  # fmt: skip
        if row["errors"]:
            bars.append(f'<rect x="{x0:.1f}" y="{err_top:.1f}" width="{width:.1f}" '
                        f'height="{ok_top - err_top:.1f}" fill="{COLORS["errors"]}"/>')  # fmt: skip
    ticks = [(PAD + (i + 0.5) * slot, str(i)) for i in range(0, n, max(1, n // 10))]
    return _svg("Throughput (responses and errors per second)",
                _axes("second", "per second", y_max, ticks) + "".join(bars),
                ["completed", "errors"])  # fmt: skip


def spectrum_chart(spectrum: list[dict[str, float]]) -> str:
    """Latency by percentile on HdrHistogram's axis: x = log10(1 / (1 - p))."""
    if not spectrum:
        return _svg("Percentile spectrum", _axes("percentile", "ms", 1, []), ["spectrum"])
    xs = [math.log10(1 / max(1e-6, 1 - p["percentile"] / 100)) for p in spectrum]
    y_max = max(p["ms"] for p in spectrum) or 0.001
    x = _scale(0, max(xs), PAD, W - 10)
    y = _scale(0, y_max, H - PAD, 10)
    points = " ".join(f"{x(a):.1f},{y(p['ms']):.1f}" for a, p in zip(xs, spectrum, strict=True))
    labels = {0: "0%", 1: "90%", 2: "99%", 3: "99.9%", 4: "99.99%", 5: "99.999%", 6: "max"}
    ticks = [(x(k), v) for k, v in labels.items() if k <= max(xs)]
    body = (f'<polyline class="series" data-series="spectrum" fill="none" '
            f'stroke="{COLORS["spectrum"]}" stroke-width="2" points="{points}"/>')  # fmt: skip
    axes = _axes("percentile", "ms", y_max, ticks)
    return _svg("Percentile spectrum (ms, corrected)", axes + body, ["spectrum"])


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def render(result: dict[str, Any]) -> str:
    r = result
    req = r["requests"]
    lat = r["latency_ms"]
    status = "VALID" if r["valid"] else "INVALID: " + "; ".join(r["invalid_reasons"])
    overview = _table([
        ("target", r["target"]),
        ("model", f"{r['model']}" + (f", {r['rate']:g} req/s planned" if r["rate"] else "")),
        ("connections / workers", f"{r['connections']} / {r['workers']}"),
        ("duration", f"{r['duration_s']:.2f} s"),
        ("responses", f"{req['completed']:,} ({r['throughput_rps']:,.1f} req/s)"),
        ("errors", f"{req['errors']:,} ({req['error_rate_pct']:.3f}%)"),
        ("run", status),
    ])  # fmt: skip
    keys = ("p50", "p90", "p99", "p99.9", "p99.99", "max", "mean")
    head = "".join(f"<th>{k}</th>" for k in keys)
    rows = "".join(
        f"<tr><th>{name}</th>" + "".join(f"<td>{v[k]:.3f}</td>" for k in keys) + "</tr>"
        for name, v in lat.items()
    )
    errors = (
        _table([(k, f"{v:,}") for k, v in r["errors"].items()]) if r["errors"] else "<p>none</p>"
    )
    codes = (
        _table([(k, f"{v:,}") for k, v in r["status"].items()]) if r["status"] else "<p>none</p>"
    )
    checks = "".join(
        f'<li class="{"ok" if t["passed"] else "fail"}">{html.escape(t["threshold"])}: '
        f"{'ok' if t['passed'] else 'FAILED'} (actual {t['actual']:.3f})</li>"
        for t in r["thresholds"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>wirekit load: {html.escape(r["target"])}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 820px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
th, td {{ border: 1px solid #ddd; padding: 4px 10px; text-align: right; }}
th {{ background: #f6f6f6; text-align: left; }}
figure {{ margin: 16px 0; }} figcaption {{ font-weight: 600; margin-bottom: 4px; }}
svg text {{ font-size: 11px; fill: #444; }}
.fail {{ color: #b00; font-weight: 600; }} .ok {{ color: #070; }}
</style></head><body>
<h1>wirekit load report</h1>
{overview}
<h2>Latency (ms)</h2>
<table><tr><th></th>{head}</tr>{rows}</table>
{latency_chart(r["timeline"])}
{spectrum_chart(r["spectrum"])}
{throughput_chart(r["timeline"])}
<h2>Errors</h2>{errors}
<h2>Status codes</h2>{codes}
{f"<h2>Thresholds</h2><ul>{checks}</ul>" if checks else ""}
</body></html>
"""
