"""How fast the unit browser's backend answers as a logdir grows: 1 run vs 100 runs (4 layers x 10 epochs each),
and one 2,048-unit layer's grid and unit history. Synthetic folders in the real on-disk format (docs/browser.md).

    python benchmarks/browser_listing.py [--repeat 5]

Prints the median of each request (TensorBoard's WSGI app, werkzeug's test client, no network) and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from callbacks.tb_plugin import ConvscopePlugin  # noqa: E402
from callbacks.tb_plugin import plugin as plugin_module  # noqa: E402
from tests.synthetic_units import write_epoch  # noqa: E402

PREFIX = "/data/plugin/convscope"


def logdir(root: Path, runs: int) -> Path:
    for r in range(runs):
        for layer in ("relu_1", "relu_2", "relu_3", "relu_4"):
            for e in range(10):
                write_epoch(root / f"version_{r}", layer, e, 4, actmax=e % 5 == 4)
    return root


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for runs in (1, 100):
            root = logdir(Path(tmp) / f"logs_{runs}", runs)
            plugin = ConvscopePlugin(base_plugin.TBContext(logdir=str(root)))
            client = Client(application.TensorBoardWSGI([plugin]))

            def cold(plugin=plugin, client=client):
                plugin._runs, plugin._summaries = None, {}  # forget everything: walk the logdir, read every layer
                assert client.get(PREFIX + "/runs").status_code == 200

            def warm(client=client):
                assert client.get(PREFIX + "/runs").status_code == 200

            rows[runs] = {
                "/runs, cold (walk + read every layer)": median_s(cold, args.repeat),
                f"/runs, warm (runs kept {plugin_module.SCAN_TTL_S:.0f} s; 1 stat/layer)": median_s(warm, args.repeat),
                "is_active": median_s(plugin.is_active, args.repeat),
            }
        big = Path(tmp) / "big"
        for e in range(10):
            write_epoch(big / "version_0", "fc", e, 2048, actmax=e % 5 == 4, kind="fc")
        plugin = ConvscopePlugin(base_plugin.TBContext(logdir=str(big)))
        client = Client(application.TensorBoardWSGI([plugin]))
        q = "?run=version_0&layer=fc"
        first = median_s(lambda: client.get(PREFIX + "/unit" + q + "&unit=0"), 1)  # parses 10 stats.json
        grid = median_s(lambda: client.get(PREFIX + "/grid" + q), args.repeat)
        unit = median_s(lambda: client.get(PREFIX + "/unit" + q + "&unit=2047"), args.repeat)

    print(f"{'request':42s} {'1 run':>10s} {'100 runs':>10s} {'ratio':>7s}")
    for key in rows[1]:
        a, b = rows[1][key], rows[100][key]
        print(f"{key:42s} {a * 1e3:8.2f}ms {b * 1e3:8.2f}ms {b / a:7.1f}")
    print(f"2,048-unit layer, 10 epochs: /grid {grid * 1e3:.1f} ms; /unit {unit * 1e3:.1f} ms (first, parsing the")
    print(f"  10 stats.json files: {first * 1e3:.0f} ms; later answers from the parsed-file cache)")


if __name__ == "__main__":
    main()
