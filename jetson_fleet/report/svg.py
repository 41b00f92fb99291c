"""Bar charts as inline SVG for the HTML fleet report (no scripts, no external resources)."""

from __future__ import annotations

import html

from markupsafe import Markup


def _short(value: float) -> str:
    """A chart label: 3712, 27.5, 0.55."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def bar_chart(
    chart_id: str,
    title: str,
    unit: str,
    series: list[str],
    rows: list[tuple[str, list[float | None], list[bool]]],
    target: float,
    target_label: str,
) -> Markup:
    """A bar chart as inline SVG: one group per host (rows: host, values per series, pass per series) and a
    dashed target line. Failing bars get class "fail"."""
    bar_w, gap, left, top, plot_h = 22, 4, 56, 34, 170
    group_w = max(70, len(series) * (bar_w + gap) + 28)
    width = max(left + group_w * len(rows) + 150, 8 * len(title) + left)  # room for the title
    height = top + plot_h + 60
    values = [v for _, vals, _ in rows for v in vals if v is not None]
    scale_max = max([*values, target]) * 1.15 or 1.0
    bottom = top + plot_h

    def y(value: float) -> float:
        return bottom - value / scale_max * plot_h

    palette = ["#3b7dd8", "#8e5bd1", "#d88a3b", "#3ba58e"]
    parts = [
        f'<svg id="{chart_id}" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" class="title">{html.escape(title)}</text>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>',
        f'<line class="axis" x1="{left}" y1="{bottom}" x2="{width - 140}" y2="{bottom}"/>',
        f'<text x="{left - 6}" y="{bottom}" class="tick" text-anchor="end">0</text>',
        f'<text x="{left - 6}" y="{top + 4}" class="tick" text-anchor="end">{_short(scale_max)}</text>',
    ]
    for index, (host, vals, passes) in enumerate(rows):
        x0 = left + index * group_w + 14
        for s_index, (value, passed) in enumerate(zip(vals, passes, strict=True)):
            x = x0 + s_index * (bar_w + gap)
            label = f"{host} {series[s_index]}: {'n/a' if value is None else _short(value)} {unit}"
            if value is None:
                parts.append(f'<text x="{x}" y="{bottom - 4}" class="na">n/a</text>')
                continue
            state = "pass" if passed else "fail"
            color = palette[s_index % len(palette)] if len(series) > 1 else ("#2e9e5b" if passed else "#d23c3c")
            parts.append(
                f'<rect class="bar {state}" data-host="{html.escape(host)}" '
                f'data-series="{html.escape(series[s_index])}" data-value="{value:g}" x="{x}" y="{y(value):.1f}" '
                f'width="{bar_w}" height="{bottom - y(value):.1f}" fill="{color}">'
                f"<title>{html.escape(label)}</title></rect>"
            )
            parts.append(f'<text x="{x + bar_w / 2}" y="{y(value) - 3:.1f}" class="value">{_short(value)}</text>')
        parts.append(f'<text x="{x0}" y="{bottom + 16}" class="host">{html.escape(host)}</text>')
    ty = y(target)
    parts.append(
        f'<line class="target" data-value="{target:g}" x1="{left}" y1="{ty:.1f}" x2="{width - 140}" y2="{ty:.1f}"/>'
    )
    parts.append(f'<text x="{width - 136}" y="{ty + 4:.1f}" class="target-label">{html.escape(target_label)}</text>')
    if len(series) > 1:
        for s_index, name in enumerate(series):
            ly, lx = bottom + 36, left + s_index * 110
            parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{palette[s_index]}"/>')
            parts.append(f'<text x="{lx + 14}" y="{ly}" class="legend">{html.escape(name)}</text>')
    parts.append("</svg>")
    return Markup("\n".join(parts))
