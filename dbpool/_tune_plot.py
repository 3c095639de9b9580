"""The PNG of ``dbpool tune --plot``: throughput and p99 latency against pool size.

matplotlib comes from the optional extra ``dbpool[tune]`` and is imported here only, on
use, with the Agg backend (no display needed, and no GUI toolkit imported).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbpool.exc import ConfigError

if TYPE_CHECKING:
    from dbpool.tune import TuneResult

# Small enough to commit, sharp enough to read: 1000 x 700 pixels.
_SIZE_INCHES = (10.0, 7.0)
_DPI = 100


def write(result: TuneResult, path: str, *, title: str | None = None) -> None:
    """Draw ``result`` and save it as a PNG at ``path``.

    The top panel shows throughput (units of work per second), the bottom one the p99
    query latency and p99 checkout wait in milliseconds, both against pool size; dashed
    lines mark the default size and the recommendation, and sizes with timeouts or
    errors are drawn hollow.

    Args:
        result: the run (dbpool.tune.run's result).
        path: the PNG file to write.
        title: the figure's title; None for one naming the database and workload.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise ConfigError('the plot needs matplotlib: pip install "dbpool[tune]"') from None

    steps = result.steps
    sizes = [step.size for step in steps]
    rec = result.recommendation
    figure, (top, bottom) = pyplot.subplots(
        2, 1, sharex=True, figsize=_SIZE_INCHES, dpi=_DPI, height_ratios=(3, 2)
    )
    try:
        top.plot(sizes, [s.throughput for s in steps], marker="o", color="tab:blue",
                 label="throughput")  # fmt: skip
        bottom.plot(sizes, [s.query_p99 * 1000 for s in steps], marker="o",
                    color="tab:orange", label="query p99")  # fmt: skip
        bottom.plot(sizes, [s.wait_p99 * 1000 for s in steps], marker="s",
                    color="tab:green", label="checkout wait p99")  # fmt: skip
        troubled = [s for s in steps if s.timeouts or s.errors]
        if troubled:
            top.scatter([s.size for s in troubled], [s.throughput for s in troubled], s=140,
                        facecolors="none", edgecolors="tab:red", zorder=3,
                        label="timeouts or errors")  # fmt: skip
        top.set_ylabel("units of work per second")
        top.set_ylim(bottom=0)
        bottom.set_ylabel("p99 (ms)")
        bottom.set_ylim(bottom=0)
        bottom.set_xlabel("pool size (connection_limit)")
        if sizes and max(sizes) / min(sizes) >= 8:
            bottom.set_xscale("log", base=2)
        bottom.set_xticks(sizes, [str(size) for size in sizes])
        marks = [(result.default_size, "gray", 1.2, f"default size ({result.default_size})")]
        if rec is not None and rec.connection_limit is not None:
            marks.append((rec.connection_limit, "tab:red", 1.5,
                          f"recommended ({rec.connection_limit})"))  # fmt: skip
        for axes in (top, bottom):
            axes.grid(True, alpha=0.3)
            for size, colour, width, label in marks:  # named once, in the top legend
                axes.axvline(size, color=colour, linestyle="--", linewidth=width,
                             label=label if axes is top else None)  # fmt: skip
        top.legend(loc="lower right")
        bottom.legend(loc="upper right")
        figure.suptitle(title or _title(result))
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        pyplot.close(figure)


def _title(result: TuneResult) -> str:
    how = ", one transaction" if result.workload.transaction else ""
    partial = " (interrupted)" if result.interrupted else ""
    return (
        f"dbpool tune: {result.database}, {result.workload.description}{how}\n"
        f"{result.threads} threads, {result.seconds:g} s per size{partial}"
    )
