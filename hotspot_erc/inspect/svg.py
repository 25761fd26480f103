"""Small inline SVG charts for the report: grouped bars, a histogram, a heatmap and lines.

Plain strings, no plotting library: the report must open offline from one file, and a figure
drawn as SVG stays sharp and carries its numbers in ``<title>`` tooltips.
"""
from __future__ import annotations

from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_PAD = {"left": 44, "right": 10, "top": 12, "bottom": 38}


def _fmt(v, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def compact(v: float) -> str:
    """A count short enough for an axis tick: 374585 -> 375k."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}"


def _legend(names, height: int, x0: int) -> list[str]:
    out, x = [], x0 + 6
    for j, name in enumerate(names):
        out.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
                   f'<text x="{x + 14}" y="{height - 5}" class="tick">{escape(name)}</text>')
        x += 24 + 6 * len(name)
    return out


def _frame(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg class="chart" role="img" aria-label="{escape(label)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>")


def _axes(width: int, height: int, lo: float, hi: float, ylabel: str, fmt: str) -> list[str]:
    x0, y0, y1 = _PAD["left"], height - _PAD["bottom"], _PAD["top"]
    out = [f'<line x1="{x0}" y1="{y0}" x2="{width - _PAD["right"]}" y2="{y0}" class="axis"/>',
           f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" class="axis"/>']
    ticks = ((lo, y0), (hi, y1), ((lo + hi) / 2, (y0 + y1) / 2)) if hi > lo else ((lo, y0),)
    for v, y in ticks:
        text = compact(v) if fmt == "count" else fmt.format(v)
        out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{escape(text)}</text>')
    if ylabel:
        out.append(f'<text x="10" y="{(y0 + y1) / 2:.1f}" class="label" transform="rotate(-90 10 {(y0 + y1) / 2:.1f})" '
                   f'text-anchor="middle">{escape(ylabel)}</text>')
    return out


def bars(categories: list[str], series: dict[str, list], ymax: float | None = None, ymin: float = 0.0,
         ylabel: str = "", fmt: str = "{:.2f}", width: int = 520, height: int = 220) -> str:
    """Grouped bars: one group per category, one bar per series (None values are left out)."""
    vals = [v for s in series.values() for v in s if v is not None]
    hi = ymax if ymax is not None else (max(vals + [ymin]) * 1.1 or 1.0)
    lo = min(vals + [ymin])
    span = (hi - lo) or 1.0
    x0, y0 = _PAD["left"], height - _PAD["bottom"]
    plot_w, plot_h = width - x0 - _PAD["right"], y0 - _PAD["top"]
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    body = _axes(width, height, lo, hi, ylabel, fmt)
    zero = y0 - (0.0 - lo) / span * plot_h if lo < 0 else y0
    for i, cat in enumerate(categories):
        for j, (name, s) in enumerate(series.items()):
            v = s[i] if i < len(s) else None
            if v is None:
                continue
            top = y0 - (v - lo) / span * plot_h
            y, h = (top, zero - top) if v >= 0 or lo >= 0 else (zero, top - zero)
            x = x0 + i * group_w + group_w * 0.1 + j * bar_w
            body.append(f'<rect x="{x:.1f}" y="{min(y, zero):.1f}" width="{bar_w:.1f}" height="{abs(h):.1f}" '
                        f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(f"{cat}, {name}: {_fmt(v, fmt)}")}'
                        "</title></rect>")
        body.append(f'<text x="{x0 + (i + 0.5) * group_w:.1f}" y="{y0 + 14}" class="tick" text-anchor="middle">'
                    f"{escape(cat)}</text>")
    if len(series) > 1:
        body += _legend(list(series), height, x0)
    return _frame(width, height, body, ylabel or "bar chart")


def histogram(edges: list[float], counts: list[int], xlabel: str, width: int = 320, height: int = 180,
              fmt: str = "{:.2f}") -> str:
    """Counts per bin; the first and last edge label the x axis."""
    hi = max(counts) if counts and max(counts) > 0 else 1
    x0, y0 = _PAD["left"], height - _PAD["bottom"]
    plot_w, plot_h = width - x0 - _PAD["right"], y0 - _PAD["top"]
    bw = plot_w / max(len(counts), 1)
    body = _axes(width, height, 0, hi, "frames", "count")
    for i, c in enumerate(counts):
        h = c / hi * plot_h
        tip = f"[{fmt.format(edges[i])}, {fmt.format(edges[i + 1])}): {c}"
        body.append(f'<rect x="{x0 + i * bw:.1f}" y="{y0 - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
                    f'fill="{PALETTE[0]}"><title>{escape(tip)}</title></rect>')
    body.append(f'<text x="{x0}" y="{y0 + 14}" class="tick">{escape(fmt.format(edges[0]))}</text>'
                f'<text x="{width - _PAD["right"]}" y="{y0 + 14}" class="tick" text-anchor="end">'
                f'{escape(fmt.format(edges[-1]))}</text>'
                f'<text x="{x0 + plot_w / 2:.1f}" y="{height - 6}" class="label" text-anchor="middle">'
                f'{escape(xlabel)}</text>')
    return _frame(width, height, body, xlabel)


def heatmap(matrix: list[list[float]], rows: list[str], cols: list[str], vmax: float | None = None,
            fmt: str = "{:.2f}", cell: int = 34, label: str = "heatmap") -> str:
    """Cells shaded by value (0 white to ``vmax`` dark blue), each with its number."""
    left, top = 8 + 7 * max((len(r) for r in rows), default=1), 8 + 7 * max((len(c) for c in cols), default=1)
    # rotated column labels reach right of their column by about their own length
    width, height = left + cell * len(cols) + top, top + cell * len(rows) + 4
    vals = [v for r in matrix for v in r if v is not None]
    hi = vmax if vmax is not None else (max(vals) if vals and max(vals) > 0 else 1.0)
    body = []
    for j, c in enumerate(cols):
        x = left + (j + 0.5) * cell
        body.append(f'<text x="{x:.1f}" y="{top - 6}" class="tick" text-anchor="start" '
                    f'transform="rotate(-45 {x:.1f} {top - 6})">{escape(c)}</text>')
    for i, r in enumerate(rows):
        y = top + i * cell
        body.append(f'<text x="{left - 4}" y="{y + cell / 2 + 4:.1f}" class="tick" text-anchor="end">'
                    f"{escape(r)}</text>")
        for j, v in enumerate(matrix[i]):
            share = 0.0 if v is None else max(0.0, min(1.0, v / hi))
            colour = f"rgba(31,119,180,{share:.3f})"
            ink = "#fff" if share > 0.55 else "#222"
            body.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{colour}" '
                        f'class="hm"><title>{escape(f"{r} / {cols[j]}: {_fmt(v, fmt)}")}</title></rect>'
                        f'<text x="{left + (j + 0.5) * cell:.1f}" y="{y + cell / 2 + 4:.1f}" class="cellnum" '
                        f'text-anchor="middle" fill="{ink}">{escape(_fmt(v, fmt))}</text>')
    return _frame(width, height, body, label)


def lines(x: list, series: dict[str, list], ylabel: str = "", ymin: float | None = None,
          ymax: float | None = None, width: int = 520, height: int = 220, fmt: str = "{:.2f}") -> str:
    """One polyline per series over ``x`` (None values break nothing: they are skipped)."""
    vals = [v for s in series.values() for v in s if v is not None]
    lo = ymin if ymin is not None else (min(vals) if vals else 0.0)
    hi = ymax if ymax is not None else (max(vals) if vals else 1.0)
    span = (hi - lo) or 1.0
    x0, y0 = _PAD["left"], height - _PAD["bottom"]
    plot_w, plot_h = width - x0 - _PAD["right"], y0 - _PAD["top"]
    step = plot_w / max(len(x) - 1, 1)
    body = _axes(width, height, lo, hi, ylabel, fmt)
    for j, (name, s) in enumerate(series.items()):
        pts = [(x0 + i * step, y0 - (v - lo) / span * plot_h) for i, v in enumerate(s) if v is not None]
        colour = PALETTE[j % len(PALETTE)]
        if len(pts) > 1:
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
                        + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for (a, b), v, xi in zip(pts, [v for v in s if v is not None], [xi for xi, v in zip(x, s) if v is not None]):
            body.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{colour}"><title>'
                        f'{escape(f"{name}, {xi}: {_fmt(v, fmt)}")}</title></circle>')
    body += _legend(list(series), height, x0)
    # Every x label when there are few (the points are evenly spaced categories), else the ends.
    shown = range(len(x)) if len(x) <= 12 else (0, len(x) - 1)
    for i in shown:
        body.append(f'<text x="{x0 + i * step:.1f}" y="{y0 + 14}" class="tick" text-anchor="middle">'
                    f"{escape(str(x[i]))}</text>")
    return _frame(width, height, body, ylabel or "line chart")
