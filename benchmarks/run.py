"""`make bench`: run every benchmark, print the rows, append them to BENCHMARKS.md with machine and date.

    python -m benchmarks.run                 # all
    python -m benchmarks.run sampler losses  # some
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import sys
from pathlib import Path

SUITES = {
    "sampler": "benchmarks.bench_sampler",
    "losses": "benchmarks.bench_losses",
    "fused_head": "benchmarks.bench_fused_head",
    "verify": "benchmarks.bench_verify",
    "store": "benchmarks.bench_store",
    "store_growth": "benchmarks.bench_store_growth",
    "pipeline": "benchmarks.bench_pipeline",
    "dashboard": "benchmarks.bench_dashboard",
    "dashboard_load": "benchmarks.bench_dashboard_load",
}
OUT = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = """# Benchmarks

Rows appended by `make bench` (`python -m benchmarks.run`), newest last. Each section names the
machine and date it was measured on; compare figures only within one section.
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {mem_kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        mem = ""
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def main(argv: list[str]) -> int:
    names = argv or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(SUITES)}", file=sys.stderr)
        return 2
    rows = []
    failed: list[str] = []
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        try:
            suite_rows = importlib.import_module(SUITES[name]).run()
        except Exception as err:  # one broken suite must not lose the others' figures
            print(f"[bench] {name} FAILED: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            failed.append(f"{name} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
            continue
        for row in suite_rows:
            verdict = "ok" if row["ok"] else "MISSED"
            print(f"  {row['name']}: {row['value']:.4g} {row['unit']} (target {row['target']}) {verdict}", flush=True)
            rows.append(row)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {stamp} — {machine()}\n", "| benchmark | value | target | met |", "|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['value']:.4g} {row['unit']} | {row['target']} | {'yes' if row['ok'] else 'NO'} |"
        )
    lines += [f"\nSuite failed, no figures: {f}" for f in failed]
    text = OUT.read_text() if OUT.exists() else HEADER
    OUT.write_text(text + "\n".join(lines) + "\n")
    print(f"[bench] appended {len(rows)} rows to {OUT}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
