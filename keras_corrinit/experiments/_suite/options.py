"""The options of `keras-corrinit compare` and `summary`, with no import of Keras or of this package.

`keras_corrinit_cli` loads this file by its path to answer `compare --help`
and `summary --help` at once (importing anything inside `keras_corrinit`
imports the package, and so Keras and its backend). The names it offers are
written here; `tests/experiments/suite/test_suite.py` checks them against the data sets,
networks and arms the suite really has.
"""

import argparse
import importlib.util
import math
import os
import sys

COMPARE_DESCRIPTION = "the built-in benchmarks, on `keras_corrinit.experiments.compare`."
SUMMARY_DESCRIPTION = "`keras-corrinit summary FOLDER...`: compact tables of finished grids, for the README."

DATASETS = ["digits", "digits32", "photos32", "cifar10", "cifar100", "svhn"]
NETWORKS = sorted(
    ["vgg8", "vgg16", "vgg19", "resnet10", "resnet18", "resnet34", "small_cnn", "keras_io", "resnet20", "mobilenet"]
    + ["keras_io_xception"]
    + ["vit"]
    + [f"convmixer{d}k{k}{s}" for d in (2, 4, 6, 8) for k in (3, 5, 7, 9) for s in ("", "_frozen")]
)


def _registry():
    """The arm registry (`experiments/_registry.py`): the package's module when it is imported, else the file
    loaded by its path (the command's `--help` imports no Keras)."""
    loaded = sys.modules.get("keras_corrinit.experiments._registry")
    if loaded is not None:
        return loaded
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_registry.py")
    spec = importlib.util.spec_from_file_location("_keras_corrinit_registry", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGISTRY = _registry()
DEPTHWISE = ("depthwise_default", "depthwise_he", "covariance_closed_form", "covariance_learned")
# Arm names of earlier versions, still accepted (with a note): stored results use them.
RENAMED = dict(REGISTRY.ALIASES)
BASE_ARMS = sorted(REGISTRY.ARMS)
CONTROLS = [f"{arm}~var" for arm in ("correlated", "correlated_learned", "correlated_layerwise")] + [
    "correlated_weight~sum",
    "covariance_closed_form~var",
    "covariance_learned~var",
]
# Arms whose runs recompute batch normalization's statistics before each evaluation (PreciseBN).
RECALIBRATED = [
    f"{arm}+recalibrate"
    for arm in (
        "default",
        "initialize",
        "anyinit",
        "initialize_statistics_keep",
        "initialize_residual_scaled",
        "initialize_residual_keep",
    )
]
ARMS = BASE_ARMS + CONTROLS + RECALIBRATED
GAMMA_BASES = ["he_normal", "he_uniform"]
# The main job (`keras-corrinit compare` with no arguments): the network as written, He, `initialize`,
# Algorithm 1 and its scale control, on photos32 (natural images, offline), 5 seeds of 4 epochs...
MAIN_ARMS = ["default", "he", "initialize", "correlated", "correlated~var"]
# ... on a quarter of photos32's training crops (a seeded random subset, all ten classes): a first run's size.
MAIN_TRAIN = 750
SUMMARY_ARMS = ["correlated", "correlated~var", "correlated_weight", "correlated_weight~sum", "correlated_learned"]


def positive(text):
    """An argparse type: an int >= 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1; received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1; received {value}")
    return value


def real(low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite float in [low, high] (an end open where told); argparse names the option."""
    bounds = " and ".join(
        text
        for text in (
            None if low is None else f"{'>' if low_open else '>='} {low:g}",
            None if high is None else f"{'<' if high_open else '<='} {high:g}",
        )
        if text
    )

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {bounds}; received {text!r}") from None
        below = low is not None and (value < low or (low_open and value == low))
        above = high is not None and (value > high or (high_open and value == high))
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(f"must be a finite number {bounds}; received {text}")
        return value

    return parse


def arm_name(text):
    """An argparse type: an arm's name, an earlier version's name replaced by today's (said on stderr)."""
    if text in RENAMED:
        print(f"keras-corrinit compare: arm {text!r} is now called {RENAMED[text]!r}.", file=sys.stderr)
    return RENAMED.get(text, text)


def compare_parser():
    """`keras-corrinit compare`'s options (keras-free: `--help` answers without importing Keras)."""
    p = argparse.ArgumentParser(prog="keras-corrinit compare", description=COMPARE_DESCRIPTION, allow_abbrev=False)
    p.add_argument("--grid", help="run a grid behind docs/evidence.md ('list' lists them); later arguments override")
    p.add_argument("--dataset", nargs="+", default=["photos32"], choices=DATASETS)
    p.add_argument(
        "--network",
        nargs="+",
        default=None,
        choices=NETWORKS,
        metavar="NETWORK",
        help=f"from {NETWORKS}; default: small_cnn for digits, digits32 and photos32; vgg8 and resnet10 for the "
        "downloaded data sets",
    )
    p.add_argument(
        "--init",
        nargs="+",
        default=MAIN_ARMS,
        type=arm_name,
        choices=ARMS,
        metavar="ARM",
        help=f"arms, from {ARMS}",
    )
    p.add_argument(
        "--baseline",
        default="default",
        type=arm_name,
        choices=BASE_ARMS + RECALIBRATED,
        metavar="ARM",
        help="arm the paired differences are taken to (trained too if not in --init); default: the network as "
        "written (Keras's glorot_uniform)",
    )
    p.add_argument("--batch-norm", nargs="+", default=["off"], choices=["off", "on"])
    p.add_argument("--seeds", type=positive, default=5)
    p.add_argument(
        "--epochs", type=positive, help="epochs per run at a constant learning rate (default 4; not with --budgets)"
    )
    p.add_argument(
        "--budgets",
        type=positive,
        nargs="+",
        help="the budget protocol instead of --epochs: one run per budget, its learning rate decaying to 0 at "
        "its end; epochs to target = the smallest budget whose mean reaches the baseline's at the largest",
    )
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=real(0, low_open=True), nargs="+", default=[0.005])
    p.add_argument("--momentum", type=real(0, 1, high_open=True), default=0.8, help="SGD momentum")
    p.add_argument(
        "--bn-momentum",
        type=real(0, 1, high_open=True),
        default=0.99,
        help="momentum of every BatchNormalization's moving averages (default 0.99, Keras's)",
    )
    p.add_argument("--l2", type=real(0), nargs="+", default=[0.0])
    p.add_argument("--batch-size", type=positive, default=32)
    p.add_argument("--width", type=real(0, low_open=True), nargs="+", default=[1.0])
    p.add_argument("--alpha", type=real(0), nargs="+", default=[1.0], help="CorrelatedHeNormal strength factor")
    p.add_argument(
        "--correlation",
        help="R of correlated/correlated_weight: a JSON file from `keras-corrinit extract` (default: the built-in R)",
    )
    p.add_argument(
        "--source-network",
        choices=NETWORKS,
        metavar="NETWORK",
        help="network the learned arms take R/NFM/AGOP from (one of --network's; default: the run's network)",
    )
    p.add_argument("--source-epochs", type=positive, default=10)
    p.add_argument(
        "--source-lr", type=real(0, low_open=True), default=0.02, help="SGD (momentum 0.9) rate of the source"
    )
    p.add_argument("--gamma-base", default="he_normal", choices=GAMMA_BASES)
    p.add_argument("--gamma-granularity", default="filter", choices=["filter", "spatial"])
    p.add_argument("--data-dir", help="tensorflow-datasets data directory")
    p.add_argument(
        "--max-train",
        type=positive,
        help=f"use only this many training samples (default: {MAIN_TRAIN} of photos32's 3,000, the size of a first "
        "run; every sample of the other data sets)",
    )
    p.add_argument("--max-test", type=positive, help="use only this many test samples")
    p.add_argument("--out", help="results folder (default: runs/compare, or runs/GRID)")
    p.add_argument("--workers", type=int, default=0, help="local worker processes (default 0: run here)")
    p.add_argument("--dask", metavar="ADDRESS", help="a Dask scheduler to run on (needs dask.distributed)")
    return p


def summary_parser():
    """`keras-corrinit summary`'s options (keras-free)."""
    parser = argparse.ArgumentParser(prog="keras-corrinit summary", description=SUMMARY_DESCRIPTION, allow_abbrev=False)
    parser.add_argument("folders", nargs="+", help="results folders of `keras-corrinit compare`")
    parser.add_argument("--arms", nargs="+", default=SUMMARY_ARMS, choices=ARMS + sorted(RENAMED), metavar="ARM")
    parser.add_argument(
        "--baseline",
        choices=ARMS + sorted(RENAMED),
        metavar="ARM",
        help="arm the differences are taken to (default: he, uncorrelated (its name before 0.3.0) or default, "
        "whichever a cell has)",
    )
    return parser


def check_compare(p, args):
    """What the options cannot say alone, refused with the parser's error before anything is imported."""
    if args.epochs is not None and args.budgets:
        p.error(
            "pass --epochs (runs at a constant learning rate) or --budgets (each run decays it to zero at its "
            "budget), not both: with --budgets each run trains for its budget's epochs"
        )
    if args.epochs is None and not args.budgets:
        args.epochs = 4
    if args.max_train is None and args.dataset == ["photos32"]:
        args.max_train = MAIN_TRAIN
    if args.workers < 0 or (args.workers and args.dask):
        p.error("--workers takes a count >= 0, and not together with --dask")
    return args
