"""The `paced` command line.

paced config show FILE [--set key=value ...]   print the resolved config (defaults filled in)
paced config check FILE [--set key=value ...]  validate; exit 0 if usable, 2 with the problems if not
paced run --config FILE [--out DIR] [--set ...] [--resume] [--overwrite]   run the pipeline (services.driver)
paced scale --rollout N [--store URL] [--run NAME] [--address ADDR] [--wait S]   change the rollout replicas
paced experiment FILE [--out DIR] [--quick] [--parallel N]   arms x seeds, then report.md (services.experiment)
paced analyze snr --config FILE [--checkpoint DIR] ...       gradient SNR by pass rate (services.analyze_snr)
paced export RUN_DIR OUT [--step N] [--push-to-hub REPO]   the trained student as an HF model folder (services.export)
paced eval --model DIR_OR_RUN --data NAME_OR_FILE [--samples K] [--json]   a model's accuracy (services.evaluate)
paced models import-gguf SRC DST [--dtype D] [--overwrite]   a GGUF file -> an HF model folder (services.gguf_import)
paced plan FILE [--set ...] [--json]           what a run will ask Ray for, per actor and at its peak (services.plan)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence

from paced_core.config import ConfigError, add_set_option, dump_config, load_config
from services.store.base import STORE_HELP, STORE_URL_ENV, PassRateStore


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="YAML config file")
    add_set_option(parser, "learner.lr=1e-5")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paced", description="PACED: pass-rate weighted distillation")
    parser.add_argument("--version", action="version", version=f"paced {importlib.metadata.version('paced')}")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="inspect and validate run configs")
    config_cmds = config.add_subparsers(dest="config_command", required=True)
    _add_config_args(config_cmds.add_parser("show", help="print the resolved config"))
    _add_config_args(config_cmds.add_parser("check", help="validate a config"))
    commands.add_parser(
        "run", help="run the pipeline (arguments: see python -m services.driver --help)", add_help=False
    )
    models = commands.add_parser("models", help="model tools: paced models import-gguf SRC DST")
    models.add_subparsers(dest="models_command", required=True).add_parser(
        "import-gguf", help="a GGUF file -> an HF safetensors model folder (--help for its options)", add_help=False
    )
    commands.add_parser(
        "export", help="a run's trained student as an HF model folder (paced export --help)", add_help=False
    )
    commands.add_parser(
        "eval", help="a model's accuracy on a data set, as a run scores it (paced eval --help)", add_help=False
    )
    commands.add_parser(
        "experiment", help="run every arm x seed of an experiment file, then its report", add_help=False
    )
    commands.add_parser("analyze", help="paced analyze snr: gradient SNR by pass rate (--help)", add_help=False)
    commands.add_parser("dashboard", help="serve the web dashboard of a run (paced dashboard --help)", add_help=False)
    commands.add_parser("plan", help="what a run of FILE will ask Ray for (paced plan --help)", add_help=False)
    scale = commands.add_parser("scale", help="set the desired number of rollout actors of a running run")
    scale.add_argument("--rollout", type=int, required=True, metavar="N", help="desired rollout replicas (>= 0)")
    scale.add_argument("--store", default=os.environ.get(STORE_URL_ENV), help=STORE_HELP)
    scale.add_argument("--run", default="paced", help="run name (run.name in its config)")
    scale.add_argument("--address", default=None, help="Ray address when the run uses the embedded store")
    scale.add_argument(
        "--wait", type=float, default=5.0, metavar="S", help="seconds to wait for the run to reconcile (default 5)"
    )
    return parser


def scale(args: argparse.Namespace) -> int:
    from services.cluster import init_ray
    from services.driver.fleet import ROLE
    from services.store import StoreError, attach_store

    if args.rollout < 0:
        print(f"paced scale: --rollout must be >= 0, got {args.rollout}", file=sys.stderr)
        return 2
    if args.store is None:
        init_ray(args.address or "auto")  # the running cluster, not a new one
    try:
        store = attach_store(args.store, args.run)
    except StoreError as err:
        print(f"paced scale: {err}", file=sys.stderr)
        return 1
    info = store.run_info()
    cap = info.max_replicas if info else None
    if cap is not None and args.rollout > cap:
        print(
            f"paced scale: run {args.run} allows at most {cap} rollout replicas (rollout.max_replicas in its "
            f"config), got {args.rollout}",
            file=sys.stderr,
        )
        return 2
    before = store.desired_replicas(ROLE)
    store.set_desired_replicas(ROLE, args.rollout)
    print(f"run {args.run}: desired rollout replicas {before} -> {args.rollout}")
    print(fleet_report(store, args.rollout, args.wait))
    return 0


def fleet_report(store: PassRateStore, desired: int, wait_s: float) -> str:
    """The run's rollout workers by state, once the driver has reconciled to `desired` (it does so every
    second) or after `wait_s`: how many run, start, and wait for room on the cluster (pending)."""
    deadline = time.monotonic() + wait_s
    while True:
        statuses = store.worker_statuses()
        states = Counter(s.state for s in statuses.values())
        if len(statuses) == desired or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    line = (
        f"rollout workers: {states['idle'] + states['generating']} running, {states['starting']} starting, "
        f"{states['pending']} pending"
    )
    pending = [s.detail for s in statuses.values() if s.state == "pending"]
    return line + (f" ({pending[0]})" if pending and pending[0] else "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        from services.launch import run_command

        return run_command(argv[1:], prog="paced run")
    if argv[:2] == ["models", "import-gguf"]:
        from services.gguf_import import main as import_gguf_main

        return import_gguf_main(argv[2:])
    if argv[:1] == ["export"]:
        from services.export import main as export_main

        return export_main(argv[1:])
    if argv[:1] == ["eval"]:
        from services.evaluate import main as eval_main

        return eval_main(argv[1:])
    if argv[:1] == ["experiment"]:
        from services.experiment import main as experiment_main

        return experiment_main(argv[1:])
    if argv[:1] == ["analyze"]:
        from services.analyze_snr import main as analyze_main

        return analyze_main(argv[1:])
    if argv[:1] == ["dashboard"]:
        from services.dashboard.server import main as dashboard_main

        return dashboard_main(argv[1:])
    if argv[:1] == ["plan"]:
        from services.plan import main as plan_main

        return plan_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "scale":
        return scale(args)
    try:
        if args.command == "config":
            cfg = load_config(args.file, args.overrides)
            if args.config_command == "show":
                sys.stdout.write(dump_config(cfg))
            else:
                print(f"{args.file}: ok ({cfg.learner.steps} steps, {cfg.schedule.type} schedule)")
    except ConfigError as err:
        print(f"paced: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
