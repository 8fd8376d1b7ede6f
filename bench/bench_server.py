"""Round-trip cost of the local server: the same stylize job in-process and through the client.

What the GIMP plug-in pays on top of the engine: pixels sent over loopback HTTP, queued, run by
the server's engine, sent back. Both sides are warmed up first (models loaded, tile shapes
compiled), as a long-running server is. Weights are random: speed does not depend on them.
The server runs in a private config folder, so a server you are using is not disturbed.

    .venv/bin/python bench/bench_server.py                        # 12 MP RGBA layer, compact style
    .venv/bin/python bench/bench_server.py --megapixels 4 --width full --backend torch
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_engine import test_image, write_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=12.0, help="layer size (default: 12)")
    parser.add_argument("--width", choices=["full", "compact"], default="compact")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--backend", default="auto", help="engine backend: auto, openvino, torch")
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs of runs (default: 3)")
    args = parser.parse_args()

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="impasto-bench-") as tmp:
        folder = Path(tmp)
        os.environ["IMPASTO_MODELS_DIR"] = str(folder / "models")
        os.environ["IMPASTO_CONFIG_DIR"] = str(folder / "config")
        os.environ["IMPASTO_LOG_DIR"] = str(folder / "log")
        model = write_model(folder / "models", args.width).stem
        rgb = test_image(args.megapixels)
        layer = np.ascontiguousarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
        h, w, c = layer.shape
        pixels = layer.tobytes()

        from core.client import Client
        from core.engine import Engine

        engine = Engine(device=args.device, backend=args.backend)
        label = f"{engine.device}/{engine.backend}/{engine.precision}"
        client = Client(server_args=["--device", args.device, "--backend", args.backend])
        try:
            # Warm up both (models loaded, tile shapes compiled), as a long-running server is.
            expected = engine.stylize(model, layer)
            got = np.frombuffer(client.stylize(pixels, w, h, c, model), np.uint8).reshape(h, w, c)
            same = np.array_equal(expected, got)
            # Alternate the two so that a change in the machine's load hits both alike.
            engine_times, server_times = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                engine.stylize(model, layer)
                engine_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                client.stylize(pixels, w, h, c, model)
                server_times.append(time.perf_counter() - start)
        finally:
            client.shutdown()
        # The server logs the engine's own time per job: the rest of a round trip is overhead.
        log = (folder / "log" / "server.log").read_text()
        server_engine = [float(s) for s in re.findall(r"done in ([0-9.]+) s", log)][1:]

    engine_s, server_s = statistics.median(engine_times), statistics.median(server_times)
    ratios = [s / e for e, s in zip(engine_times, server_times, strict=True)]
    overheads = []
    if len(server_engine) == len(server_times):
        overheads = [s - e for s, e in zip(server_times, server_engine, strict=True)]
    print(f"stylize {w}x{h} RGBA u8 ({w * h / 1e6:.1f} MP), {args.width} network, {label}")
    print(f"in-process runs (s): {', '.join(f'{t:.2f}' for t in engine_times)}")
    print(f"through the server (s): {', '.join(f'{t:.2f}' for t in server_times)}")
    print(f"  of which the server's engine (s): {', '.join(f'{t:.2f}' for t in server_engine)}")
    print()
    print("| path | median s | vs in-process |")
    print("|---|---|---|")
    print(f"| engine in-process | {engine_s:.2f} | 1.00 |")
    print(f"| client -> server -> engine | {server_s:.2f} | {server_s / engine_s:.3f} |")
    print()
    print(f"median ratio of paired runs: {statistics.median(ratios):.3f}")
    if overheads:
        overhead = statistics.median(overheads)
        print(
            f"server overhead (round trip minus the server's engine time): {overhead:.3f} s "
            f"= {100 * overhead / engine_s:.1f}% of the in-process time"
        )
    print(f"same pixels: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
