"""The `keras-corrinit` command: argument parsing that imports no Keras.

`keras-corrinit --help` (and `extract --help`, `compare --help`, `summary
--help`) answer at once and print no backend log lines: Keras, and so the
backend, is imported only when a command runs (`keras_corrinit.extraction.
_command` for `extract`, the built-in suite for `compare` and `summary`).
The options of `compare` and `summary` come from
`keras_corrinit/experiments/_suite/options.py`, loaded by its path. This
launcher sits outside the package because importing anything inside
`keras_corrinit` imports the package, which imports Keras.
"""

import argparse
import importlib.util
import os
import sys


def parser():
    p = argparse.ArgumentParser(
        prog="keras-corrinit",
        description="Correlated, data-aware and data-driven initialization for Keras 3.",
        allow_abbrev=False,
    )
    commands = p.add_subparsers(dest="command", required=True)
    extract = commands.add_parser("extract", help="spatial correlation of a trained model's filters")
    extract.add_argument("source", help="application name, model.keras, or weights.h5 (with --application)")
    extract.add_argument("--out", required=True, help="JSON file for the estimate")
    extract.add_argument("--plot", help="image file for correlation vs distance by depth (needs matplotlib)")
    extract.add_argument("--weights", help="weights file for an application name (default: ImageNet)")
    extract.add_argument("--application", help="architecture of a .weights.h5 file")
    extract.add_argument("--kernel-size", type=int, default=3)
    extract.add_argument("--include-depthwise", action="store_true")
    extract.add_argument("--no-cache", action="store_true")
    commands.add_parser(
        "compare",
        add_help=False,
        help="the built-in benchmarks and the evidence grids (keras-corrinit compare --help)",
    )
    commands.add_parser(
        "summary", add_help=False, help="compact tables of finished grids (keras-corrinit summary --help)"
    )
    return p


def _options():
    """`keras_corrinit/experiments/_suite/options.py` as a module, without importing the package (and Keras)."""
    return _module("options.py")


def _module(name):
    """A keras-free module of `keras_corrinit/experiments/_suite/` loaded by its path."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras_corrinit", "experiments", "_suite", name)
    spec = importlib.util.spec_from_file_location(f"_keras_corrinit_{name[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_compare(options, rest):
    """`compare`'s arguments, a grid's included, checked by the keras-free parser (exits on a usage error)."""
    parser = options.compare_parser()
    parsed = parser.parse_args(rest)
    if parsed.grid not in (None, "list"):
        grids = _module("grids.py")
        if parsed.grid not in grids.GRIDS:
            parser.error(f"--grid {parsed.grid!r} is not a grid; the grids are {sorted(grids.GRIDS)} (or 'list')")
        parsed = parser.parse_args(grids.GRIDS[parsed.grid] + rest)
    options.check_compare(parser, parsed)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = parser().parse_known_args(argv)
    if args.command in ("compare", "summary"):
        # The options are checked before Keras is imported: a usage error answers at once.
        options = _options()
        if args.command == "summary" or {"-h", "--help"} & set(rest):
            make = options.compare_parser if args.command == "compare" else options.summary_parser
            make().parse_args(rest)  # prints the help and exits, or refuses bad options
        else:
            _check_compare(options, rest)
    if args.command == "compare":
        from keras_corrinit.experiments._suite.command import main as compare_main

        return compare_main(rest)
    if args.command == "summary":
        from keras_corrinit.experiments._suite.summary import main as summary_main

        return summary_main(rest)
    if rest:
        parser().error(f"unrecognized arguments: {' '.join(rest)}")
    from keras_corrinit.extraction._command import extract

    return extract(args)


if __name__ == "__main__":
    sys.exit(main())
