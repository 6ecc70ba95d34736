"""`python -m services.driver` / `paced run`: validate, check inputs, run, and say how it ended.

    python -m services.driver --config configs/demo.yaml --out runs/demo [--set k=v ...]
    python -m services.driver --out runs/demo --resume [--set learner.steps=500]    # the folder's config
    python -m services.driver --config configs/demo.yaml --out runs/demo --overwrite  # start that folder over

The config is validated before Ray, torch or transformers are imported, so a bad config fails in a second
or two; data, models, Redis and the cluster's capacity are checked before any actor starts. Every error
is one `paced:` line. Exit codes: 0 done, 1 the run failed, 2 a bad config or run folder, 130 / 143 a
SIGINT / SIGTERM, after which the run has saved a checkpoint and its summary and says how to resume.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import yaml

from paced_core.config import ConfigError, PacedConfig, load_config

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


def resolve_config(config: str | None, out: Path, overrides: list[str], resume: bool) -> PacedConfig:
    """The run's config. A new run: `config` with `overrides`. A resumed one: the run folder's config with
    `overrides`; a `config` given too must not differ from it except where `overrides` change it."""
    from services.driver.run_dir import CONFIG, config_differences, override_keys

    saved = out / CONFIG
    if not resume or not saved.exists():
        if config is None:
            raise ConfigError(f"--config is needed: {saved} does not exist (is --out the run's folder?)")
        return load_config(config, overrides)
    if config is None:
        try:
            return load_config(saved, overrides)
        except ConfigError as err:
            if "***" not in saved.read_text():
                raise
            raise ConfigError(
                f"{err}\n{saved} keeps its secrets masked (store.url's password, dashboard.token): resume with "
                f"--config FILE (the config the run started with) or give them with --set"
            ) from err
    cfg = load_config(config, overrides)
    if config is not None:
        differences = config_differences(yaml.safe_load(saved.read_text()), cfg.to_plain(), override_keys(overrides))
        if differences:
            raise ConfigError(
                f"--resume: {config} differs from the config the run started with ({saved}):\n  "
                + "\n  ".join(differences)
                + "\nresume without --config to use the run's own, or give each change with --set key=value"
            )
    return cfg


def run_command(argv: Sequence[str], prog: str = "python -m services.driver") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Run a PACED pipeline.")
    parser.add_argument("--config", default=None, help="YAML run config (with --resume: default the run folder's)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<run.name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run")
    args = parser.parse_args(argv)
    if args.config is None and args.out is None:
        parser.error("give --config (and --out), or --out with --resume")
    try:
        out = Path(args.out) if args.out else Path("runs") / load_config(args.config, args.overrides).run.name
        cfg = resolve_config(args.config, out, args.overrides, args.resume)
    except ConfigError as err:
        print(f"paced: {err}", file=sys.stderr)
        return 2
    return _run(cfg, out, args)


def _run(cfg: PacedConfig, out: Path, args: argparse.Namespace) -> int:
    from ray.exceptions import RayError

    from paced_core.tasks import TaskDataError
    from services.cluster import ActorStartTimeout, cause_of, init_ray
    from services.driver import Driver, PipelineError, preflight
    from services.driver.dashboard import DashboardError
    from services.driver.fleet import FleetError
    from services.driver.run_dir import RunDirError
    from services.models import ModelLoadError
    from services.store import StoreError
    from services.tracking import TrackingError
    from services.verifiers import VerifierDied
    from services.weight_sync import WeightSyncError, WeightTransportError

    driver: Driver | None = None

    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if driver is None or not driver.stop(signum):
            # KeyboardInterrupt, whichever the signal: it is what Ray lets out of a blocked ray.get / ray.wait
            # (another exception raised in a handler there is printed and ignored).
            stopped_by.append(signum)
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        print(
            f"[paced] {name}: finishing the step in flight, then a checkpoint and the summary "
            f"({name} again stops at once)",
            file=sys.stderr,
            flush=True,
        )

    handlers = {s: signal.signal(s, on_signal) for s in EXIT_SIGNAL}
    resume_hint = f"resume with: paced run --out {shlex.quote(str(out))} --resume"
    try:
        preflight(cfg)
        init_ray()
        for s in EXIT_SIGNAL:  # after Ray's own setup, which may install handlers of its own
            signal.signal(s, on_signal)
        driver = Driver(cfg, out, resume=args.resume, overwrite=args.overwrite)
        try:
            summary = driver.run()
        finally:
            driver.close()
    except KeyboardInterrupt:
        signum = stopped_by[-1] if stopped_by else signal.SIGINT
        print(f"paced: stopped by {signal.Signals(signum).name} before a checkpoint could be taken; "
              f"{resume_hint} if {out / 'checkpoints'} holds one", file=sys.stderr)  # fmt: skip
        return EXIT_SIGNAL[signal.Signals(signum)]
    except RayError as err:  # before the rest: an error raised inside an actor comes back as both
        print(f"paced: an actor failed: {cause_of(err)}", file=sys.stderr)
        return 1
    except RunDirError as err:
        print(f"paced: {err}", file=sys.stderr)
        return 2
    except (
        TaskDataError,
        ModelLoadError,
        StoreError,
        PipelineError,
        VerifierDied,
        ActorStartTimeout,
        DashboardError,
        FleetError,
        WeightSyncError,
        WeightTransportError,
        TrackingError,
        FileNotFoundError,
    ) as err:
        print(f"paced: {err}", file=sys.stderr)
        return 1
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, list | dict)}, indent=2))
    if driver.interrupted:
        print(
            f"paced: stopped by {signal.Signals(driver.interrupted).name} at step {summary['steps']}: "
            f"checkpoint and summary saved; {resume_hint}",
            file=sys.stderr,
        )
        return EXIT_SIGNAL[signal.Signals(driver.interrupted)]
    return 0


def main() -> int:
    return run_command(sys.argv[1:])
