"""Pictures of runs: loss (against steps and tokens, with eval perplexity), learning rate, gradient
norm, tokens/s and MFU, and each blend source's eval loss and bits per byte, drawn from
``metrics.jsonl`` with matplotlib's Agg backend (no display, no pyplot state). One run or several
overlaid, each labelled by its run dir's name. A resumed run is one continuous curve: on resume the
trainer drops the records logged after its checkpoint, and any step still logged twice is drawn once
(the later record wins)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from pretrain.atomic import atomic_open
from pretrain.metrics import RunMetrics, read_metrics

DPI = 80
OVERVIEW_SIZE = (15.0, 8.0)  # inches: 1200 x 640 pixels at DPI
LOSS_SIZE = (10.0, 5.0)  # 800 x 400
SOURCES_SIZE = (12.0, 4.5)  # 960 x 360
SOURCE_STYLES = ("-", "--", ":", "-.")


class RedrawSchedule:
    """When a running job redraws its plots: after an evaluation only once ``interval_s`` seconds have passed
    since the last drawing (or since the schedule began), at the end always. A drawing costs rank 0 about a
    second (more as metrics.jsonl grows), and every other rank waits for it at its next collective."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.interval_s, self._clock = interval_s, clock
        self._last = clock()

    def due(self, final: bool = False) -> bool:
        """Whether to draw now (and if so, the interval starts again)."""
        now = self._clock()
        if not final and now - self._last < self.interval_s:
            return False
        self._last = now
        return True


def write_run_plots(run_dir: str | os.PathLike) -> list[Path]:
    """``run_dir/plots/loss.png`` and ``overview.png`` for one run, and ``eval_sources.png`` once its
    evaluations report figures per source; returns their paths."""
    run = read_metrics(run_dir)
    folder = Path(run_dir) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "loss.png", folder / "overview.png"]
    plot_loss([run], paths[0])
    plot_overview([run], paths[1])
    if source_names([run], "eval_loss"):
        paths.append(folder / "eval_sources.png")
        plot_eval_sources([run], paths[2])
    return paths


def plot_overview(runs: list[RunMetrics], output: str | os.PathLike) -> None:
    """Six panels: loss by step (eval perplexity on the right axis), loss by tokens, learning rate,
    gradient norm, tokens/s and MFU; one colour per run."""
    figure, axes = _figure(OVERVIEW_SIZE, 2, 3)
    loss_by_step, loss_by_tokens, lr, grad_norm, speed, mfu = axes.flat
    _loss_panel(loss_by_step, runs, "step")
    _loss_panel(loss_by_tokens, runs, "tokens")
    for panel, key, title, scale in ((lr, "lr", "learning rate", 1.0), (grad_norm, "grad_norm", "gradient norm", 1.0),
                                     (speed, "tokens_per_s", "tokens/s", 1.0), (mfu, "mfu", "MFU (%)", 100.0)):
        for color, run in _colors(runs):
            points = [(r["step"], r[key] * scale) for r in run.train if r.get(key) is not None]
            if points:
                panel.plot(*zip(*points), color=color, linewidth=1.2, label=run.name)
        panel.set_title(title)
        panel.set_xlabel("step")
        panel.grid(alpha=0.3)
    loss_by_step.legend(loc="upper right", fontsize=8)
    _save(figure, output)


def plot_loss(runs: list[RunMetrics], output: str | os.PathLike) -> None:
    """Training and evaluation loss by step, eval perplexity on the right axis."""
    figure, axes = _figure(LOSS_SIZE, 1, 1)
    _loss_panel(axes.flat[0], runs, "step")
    axes.flat[0].legend(loc="upper right", fontsize=8)
    _save(figure, output)


def plot_eval_sources(runs: list[RunMetrics], output: str | os.PathLike) -> None:
    """Eval loss and eval bits per byte by step, a line per blend source (``eval_loss/NAME``,
    ``eval_bpb/NAME`` in metrics.jsonl) and the whole valid split dotted. One run: a colour per
    source; several: a colour per run and a line style per source."""
    figure, axes = _figure(SOURCES_SIZE, 1, 2)
    for panel, metric, title in ((axes.flat[0], "eval_loss", "eval loss by source"),
                                 (axes.flat[1], "eval_bpb", "eval bits per byte by source")):
        names = source_names(runs, metric)
        for run_color, run in _colors(runs):
            for index, name in enumerate(names):
                color, style = (_colors(names)[index][0], "-") if len(runs) == 1 else (
                    run_color, SOURCE_STYLES[index % len(SOURCE_STYLES)])
                label = name if len(runs) == 1 else f"{run.name} {name}"
                _eval_line(panel, run, f"{metric}/{name}", color, style, label)
            _eval_line(panel, run, metric, run_color if len(runs) > 1 else "black", ":",
                       "all sources" if len(runs) == 1 else f"{run.name} all sources")
        if names:
            panel.legend(loc="upper right", fontsize=8)
        else:
            what = ("no bits per byte (a causal LM's figure: masked LMs report loss only)" if metric == "eval_bpb"
                    else "no figures per source")
            panel.text(0.5, 0.5, what, ha="center", va="center", transform=panel.transAxes)
        panel.set_title(title)
        panel.set_xlabel("step")
        panel.grid(alpha=0.3)
    _save(figure, output)


def source_names(runs: list[RunMetrics], metric: str) -> list[str]:
    """The sources with a ``metric/NAME`` figure in any of the runs' evaluations, in first-seen order."""
    names: dict[str, None] = {}
    for run in runs:
        for record in run.evals:
            names.update((key.split("/", 1)[1], None) for key in record if key.startswith(f"{metric}/"))
    return list(names)


def _eval_line(panel, run: RunMetrics, key: str, color: str, style: str, label: str) -> None:
    points = [(r["step"], r[key]) for r in run.evals if r.get(key) is not None]
    if points:
        panel.plot(*zip(*points), style, marker="o", color=color, linewidth=1.5, markersize=3, label=label)


def _loss_panel(panel, runs: list[RunMetrics], x: str) -> None:
    """Train (thin) and eval (dots) loss against ``x``; by step, eval perplexity reads on the right axis."""
    drawn = False
    for color, run in _colors(runs):
        train = [(r[x], r["loss"]) for r in run.train if r.get(x) is not None]
        evals = [(r[x], r["eval_loss"]) for r in run.evals if r.get(x) is not None]
        if train:
            panel.plot(*zip(*train), color=color, alpha=0.5, linewidth=1, label=f"{run.name} train")
        if evals:
            panel.plot(*zip(*evals), "o-", color=color, linewidth=2, markersize=4, label=f"{run.name} eval")
        drawn |= bool(train or evals)
    if not drawn:
        panel.text(0.5, 0.5, f"no {x} counts in these metrics", ha="center", va="center", transform=panel.transAxes)
    elif x == "step" and any(run.evals for run in runs):
        perplexity = panel.twinx()
        perplexity.set_yscale("log")
        perplexity.set_ylim(*[_ppl(v) for v in panel.get_ylim()])
        perplexity.set_ylabel("eval perplexity")
    panel.set_title(f"loss by {x}")
    panel.set_xlabel(x)
    panel.set_ylabel("loss")
    panel.grid(alpha=0.3)


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def _colors(runs: list):
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    return [(palette[i % len(palette)], run) for i, run in enumerate(runs)]


def _figure(size: tuple[float, float], rows: int, columns: int):
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = np.array(figure.subplots(rows, columns), dtype=object).reshape(rows, columns)
    return figure, axes


def _save(figure, output: str | os.PathLike) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(output, "wb") as handle:
        figure.savefig(handle, format="png", dpi=DPI)
