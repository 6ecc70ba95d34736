"""The `paced` command line.

    paced config show FILE [--set key=value ...]   print the resolved config (defaults filled in)
    paced config check FILE [--set key=value ...]  validate; exit 0 if usable, 2 with the problems if not
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from paced_core.config import ConfigError, dump_config, load_config


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting by its dotted path, e.g. --set learner.lr=1e-5 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paced", description="PACED: pass-rate weighted distillation")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="inspect and validate run configs")
    config_cmds = config.add_subparsers(dest="config_command", required=True)
    _add_config_args(config_cmds.add_parser("show", help="print the resolved config"))
    _add_config_args(config_cmds.add_parser("check", help="validate a config"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
