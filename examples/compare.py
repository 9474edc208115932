"""Compare initializers the way the correlated-initialization paper does.

Arms (see `arms.py`) x data sets x networks x widths x batch norm x
learning rates x L2 x alpha x seeds, trained with SGD (or Adam) and
GradientSignMonitor on. Writes to `--out`:

* `results.csv`: one row per finished run with every setting that changes
  its result (its identity). Resumable: a run whose settings all equal a
  finished one's is not repeated; one that differs in any setting is
  trained and reported separately. Settings an arm does not use (alpha for
  He, the source for Algorithm 1 with the built-in R) are "-".
* `histories/<run id>.json`: the run's settings and per-epoch logs.
* `sources/<id>.keras`: source networks of the learned arms, trained once
  on the training split (never the test split) and reused.
* `results.md` (also printed): each data set's adjacent-pixel correlation,
  then one table per group of shared settings: mean +/- std of test
  accuracy over seeds, the paired difference to `--baseline` with a 95% t
  interval (`*`: excludes 0), and for each correlated arm with its scale
  control whether its gain is the correlation or the scale; EnhancedGamma's
  distance from its base distribution at initialization.
* `curves_*.png` (Figures 4-6: sign changes, gradient magnitude, test
  accuracy per epoch, mean +/- std) and `gamma-ratio_*.png` (EnhancedGamma's
  test accuracy over its base's, per epoch), named under each table.

The main job (defaults: digits, the small CNN, batch norm off, 5 seeds,
Algorithm 1 vs its baseline and scale controls) runs in a few minutes on 2
CPU cores. The paper's grid, on a machine with CIFAR:

    python examples/compare.py --dataset cifar10 cifar100 --network vgg8 resnet10 \\
        --width 0.5 --epochs 40 --lr 0.005 0.1 --l2 0 0.001 --batch-size 256 --seeds 5 \\
        --init uncorrelated correlated correlated~var --batch-norm on
"""

import argparse
import csv
import hashlib
import itertools
import json
import os
import sys
import time

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arms  # noqa: E402
import datasets  # noqa: E402
import networks  # noqa: E402
import report  # noqa: E402

from keras_corrinit import CorrelationEstimate, GradientSignMonitor  # noqa: E402

# Everything that changes a run's result, in table order; `seed` last.
SETTINGS = (
    "backend",
    "dataset",
    "max_train",
    "max_test",
    "network",
    "width",
    "batch_norm",
    "optimizer",
    "lr",
    "momentum",
    "l2",
    "batch_size",
    "epochs",
    "init",
    "alpha",
    "correlation",
    "source",
    "gamma",
    "seed",
)
OUTCOMES = ("run_id", "test_accuracy", "sign_change_epoch1", "seconds")
FIELDS = SETTINGS + OUTCOMES
NOT_USED = "-"


# ------------------------------------------------------------ identity
def canonical(value):
    """The string a setting has in results.csv (and in the run id)."""
    return "all" if value is None else str(value)


def run_id(run):
    """A short hash of every setting: the run's identity and file name."""
    text = json.dumps({name: canonical(run[name]) for name in SETTINGS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def correlation_id(path):
    """Identity of an R file: its name and a hash of its content."""
    if path is None:
        return "builtin"
    with open(path, "rb") as f:
        return f"{os.path.basename(path)}#{hashlib.sha256(f.read()).hexdigest()[:12]}"


def plan(args):
    """Every run the arguments ask for, as {setting: value} dicts.

    The source id of learned arms is filled in when the run starts (it is
    the hash of the source's own settings, see `arms.source_settings`).
    """
    fixed = dict(
        backend=keras.backend.backend(),
        max_train=args.max_train,
        max_test=args.max_test,
        optimizer=args.optimizer,
        momentum=args.momentum if args.optimizer == "sgd" else NOT_USED,
        batch_size=args.batch_size,
        epochs=args.epochs,
    )
    r_id = correlation_id(args.correlation)  # hashes the R file once
    runs = []
    for dataset in args.dataset:
        network_names = args.network or (["small_cnn"] if dataset.startswith("digits") else ["vgg8", "resnet10"])
        grid = itertools.product(network_names, args.width, args.batch_norm, args.lr, args.l2, args.init)
        for network, width, bn, lr, l2, init in grid:
            for alpha in args.alpha if arms.uses_alpha(init) else [NOT_USED]:
                for seed in range(args.seeds):
                    run = dict(
                        fixed,
                        dataset=dataset,
                        network=network,
                        width=width,
                        batch_norm=bn,
                        lr=lr,
                        l2=l2,
                        init=init,
                        alpha=alpha,
                        seed=seed,
                        correlation=r_id if arms.uses_correlation(init) else NOT_USED,
                        gamma=f"{args.gamma_base}/{args.gamma_granularity}" if init == "enhanced_gamma" else NOT_USED,
                        source=NOT_USED,
                    )
                    if arms.uses_source(init):
                        run["source"] = arms.settings_id(arms.source_settings(run, args))
                    runs.append(run)
    return runs


# ------------------------------------------------------------- results
def read_results(csv_path):
    """Rows of an existing results.csv; refuses one without every setting."""
    if not os.path.exists(csv_path):
        return []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        rows = list(reader)
    if header != FIELDS:
        missing = [name for name in FIELDS if name not in header]
        raise ValueError(
            f"{csv_path} was written by another version of this script: its columns are "
            f"{list(header)}; this version records {list(FIELDS)}"
            + (f" (missing: {missing})" if missing else "")
            + ". Its runs' settings cannot all be known, so they cannot be reused or compared. "
            "Pass a new --out, or move that folder away."
        )
    return rows


def append_result(csv_path, row):
    new_file = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerow({name: canonical(row[name]) for name in FIELDS})


# -------------------------------------------------------------- running
def compile_and_fit(model, settings, data, validation=True):
    """Trains with the run's optimizer settings; returns the history dict."""
    (x_train, y_train), (x_test, y_test), _ = data
    optimizer = (
        keras.optimizers.SGD(float(settings["lr"]), momentum=float(settings["momentum"]))
        if settings["optimizer"] == "sgd"
        else keras.optimizers.Adam(float(settings["lr"]))
    )
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    history = model.fit(
        x_train,
        y_train,
        batch_size=int(settings["batch_size"]),
        epochs=int(settings["epochs"]),
        validation_data=(x_test, y_test) if validation else None,
        callbacks=[GradientSignMonitor()],
        verbose=0,
    )
    return history.history


def build_model(run, data, context):
    """The run's network, initialized by its arm."""
    (x_train, _), _, classes = data
    keras.utils.set_random_seed(run["seed"])
    model = networks.build(
        run["network"],
        x_train.shape[1:],
        classes,
        arms.layer_factory(run["init"], run["seed"], context),
        batch_norm=run["batch_norm"] == "on",
        width=run["width"],
        l2=run["l2"],
    )
    arms.post_build(run["init"], model, run["seed"], context, x_train)
    return model


class Runner:
    """Trains planned runs, with source networks loaded or trained once."""

    def __init__(self, args):
        self.args = args
        self.correlation = CorrelationEstimate.load(args.correlation) if args.correlation else None
        self.sources = {}

    def dataset(self, name):
        return datasets.load(name, self.args.data_dir, self.args.max_train, self.args.max_test)

    def context(self, run):
        source = None
        if arms.uses_source(run["init"]):
            settings = arms.source_settings(run, self.args)
            if run["source"] not in self.sources:
                self.sources[run["source"]] = arms.load_or_train_source(
                    settings, self.dataset(run["dataset"]), self.args.out, compile_and_fit
                )
            source = self.sources[run["source"]]
        return arms.Context(
            alpha=run["alpha"] if run["alpha"] != NOT_USED else 1.0,
            correlation=self.correlation,
            source=source,
            gamma_base=self.args.gamma_base,
            gamma_granularity=self.args.gamma_granularity,
        )

    def train(self, run):
        data = self.dataset(run["dataset"])
        keras.backend.clear_session()  # models of earlier runs would pile up in memory
        start = time.perf_counter()
        model = build_model(run, data, self.context(run))
        history = compile_and_fit(model, run, data)
        return {
            **run,
            "run_id": run_id(run),
            "test_accuracy": history["val_accuracy"][-1],
            "sign_change_epoch1": history["grad_sign_change"][0],
            "seconds": round(time.perf_counter() - start, 1),
        }, history


def run_all(todo, args):
    """Trains each planned run, appending each result as it finishes."""
    runner, finished = Runner(args), []
    progress = keras.utils.Progbar(len(todo), unit_name="run", stateful_metrics=["accuracy"]) if todo else None
    for run in todo:
        row, history = runner.train(run)
        with open(os.path.join(args.out, "histories", row["run_id"] + ".json"), "w") as f:
            json.dump({"settings": {k: canonical(run[k]) for k in SETTINGS}, "history": history}, f)
        append_result(os.path.join(args.out, "results.csv"), row)
        finished.append({name: canonical(row[name]) for name in FIELDS})
        progress.add(1, [("accuracy", row["test_accuracy"])])
    return finished


# ------------------------------------------------------------ reporting
def data_notes(rows, args):
    """A line per data set (its adjacent-pixel correlation) and per source network."""
    notes = []
    for name in sorted({r["dataset"] for r in rows}):
        (x_train, _), _, _ = datasets.load(name, args.data_dir, args.max_train, args.max_test)
        notes.append(
            f"- {name}: {x_train.shape[1]}x{x_train.shape[2]} inputs, mean correlation of adjacent "
            f"pixels {datasets.adjacent_pixel_correlation(x_train):.3f}"
        )
    for source in sorted({r["source"] for r in rows} - {NOT_USED}):
        with open(os.path.join(args.out, "sources", source + ".json")) as f:
            saved = json.load(f)
        note = (
            f"- source {source}: {saved['settings']['network']} trained {saved['settings']['epochs']} epochs "
            f"(batch norm {saved['settings']['batch_norm']}) on the {saved['settings']['dataset']} training "
            f"split, train accuracy {saved['train_accuracy']:.3f}"
        )
        if "mean_offdiagonal_correlation" in saved:
            note += (
                f"; its pooled 3x3 R has mean off-diagonal correlation "
                f"{saved['mean_offdiagonal_correlation']:.3f} (built-in R: 0.254)"
            )
        notes.append(note)
    return ["Data:\n\n" + "\n".join(notes)] if notes else []


def gamma_notes(rows, args):
    """EnhancedGamma's per-layer distance from its base at initialization."""
    lines = []
    configs = {(r["dataset"], r["network"], r["width"], r["batch_norm"]) for r in rows if r["init"] == "enhanced_gamma"}
    for dataset, network, width, bn in sorted(configs):
        data = datasets.load(dataset, args.data_dir, args.max_train, args.max_test)
        kernels = {}
        for label, init, seed in [
            ("enhanced", "enhanced_gamma", 0),
            ("base", arms.GAMMA_BASES[args.gamma_base], 0),
            ("base_again", arms.GAMMA_BASES[args.gamma_base], 1),
        ]:
            run = dict(network=network, width=float(width), batch_norm=bn, l2=0.0, init=init, seed=seed)
            model = build_model(
                run, data, arms.Context(gamma_base=args.gamma_base, gamma_granularity=args.gamma_granularity)
            )
            # keyed by position: layer names differ between the three models
            kernels[label] = {
                f"{i}: {type(layer).__name__} {tuple(layer.kernel.shape)}": keras.ops.convert_to_numpy(layer.kernel)
                for i, layer in enumerate(layer for layer in model.layers if hasattr(layer, "kernel"))
            }
        lines += [
            "",
            f"EnhancedGamma ({args.gamma_base}, {args.gamma_granularity}) at initialization, {dataset} "
            f"{network} width {width} bn {bn}: Earth mover's distance from {args.gamma_base}, in units of "
            "its standard deviation (noise floor: two independent base draws)",
            "",
            "| layer | EMD(enhanced, base) / std | EMD(base, base') / std | ratio |",
            "|---|---|---|---|",
        ]
        for name, distance, floor in report.weight_distances(
            kernels["enhanced"], kernels["base"], kernels["base_again"]
        ):
            lines.append(f"| {name} | {distance:.4f} | {floor:.4f} | {distance / floor:.1f}x |")
    return lines


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["digits"], choices=datasets.DATASETS)
    parser.add_argument(
        "--network",
        nargs="+",
        default=None,
        choices=sorted(networks.NETWORKS),
        help="default: small_cnn for digits and digits32, vgg8 and resnet10 otherwise",
    )
    parser.add_argument(
        "--init",
        nargs="+",
        default=["uncorrelated", "correlated", "correlated~var", "correlated_weight", "correlated_weight~sum"],
        choices=arms.ARMS,
        metavar="ARM",
        help=f"arms, from {arms.ARMS}",
    )
    parser.add_argument("--baseline", default="uncorrelated", help="arm the paired differences are taken to")
    parser.add_argument("--batch-norm", nargs="+", default=["off"], choices=["off", "on"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    parser.add_argument("--lr", type=float, nargs="+", default=[0.005])
    parser.add_argument("--momentum", type=float, default=0.8, help="SGD momentum")
    parser.add_argument("--l2", type=float, nargs="+", default=[0.0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=float, nargs="+", default=[1.0])
    parser.add_argument("--alpha", type=float, nargs="+", default=[1.0], help="CorrelatedHeNormal strength factor")
    parser.add_argument(
        "--correlation",
        help="R of correlated/correlated_weight: a JSON file from `keras-corrinit extract` (default: the built-in R)",
    )
    parser.add_argument(
        "--source-network",
        choices=sorted(networks.NETWORKS),
        help="network the learned arms take R/NFM/AGOP from (default: the run's network)",
    )
    parser.add_argument("--source-epochs", type=int, default=10)
    parser.add_argument("--source-lr", type=float, default=0.02, help="SGD (momentum 0.9) rate of the source")
    parser.add_argument("--gamma-base", default="he_normal", choices=sorted(arms.GAMMA_BASES))
    parser.add_argument("--gamma-granularity", default="filter", choices=["filter", "spatial"])
    parser.add_argument("--data-dir", help="tensorflow-datasets data directory")
    parser.add_argument("--max-train", type=int, help="use only this many training samples")
    parser.add_argument("--max-test", type=int, help="use only this many test samples")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument(
        "--shard",
        default="0/1",
        help="I/N: run only every N-th planned run from the I-th "
        "(parallel workers, each with its own --out; merge their results.csv and histories)",
    )
    parser.add_argument(
        "--sources-only",
        action="store_true",
        help="train the source networks the learned arms need, then stop (before sharding)",
    )
    return parser


def _checked(parser, args):
    """Arguments that cannot work together, refused with the parser's error."""
    index, _, count = args.shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        parser.error(f"--shard must be I/N with 0 <= I < N, e.g. 0/4; received {args.shard!r}")
    args.shard = (int(index), int(count))
    depthwise_arms = [init for init in args.init if arms.needs_depthwise(init)]
    without = [name for name in args.network or ["the default networks"] if name not in networks.CONVMIXERS]
    if depthwise_arms and without:
        parser.error(
            f"the arms {depthwise_arms} set depthwise convolutions, which {without} do not have; "
            f"pass --network with ConvMixers only (e.g. convmixer6k7), or run them separately"
        )
    if "covariance_learned" in {arms.split_control(i)[0] for i in args.init} and (
        (args.source_network or (args.network or [""])[0]) not in networks.CONVMIXERS
    ):
        parser.error("covariance_learned needs a ConvMixer source: pass --source-network (e.g. convmixer4k5)")
    return args


def parse_args(argv):
    parser = _parser()
    return _checked(parser, parser.parse_args(argv))


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(os.path.join(args.out, "histories"), exist_ok=True)
    rows = read_results(os.path.join(args.out, "results.csv"))
    done = {row["run_id"] for row in rows}
    planned = plan(args)[args.shard[0] :: args.shard[1]]
    if args.sources_only:
        runner = Runner(args)
        for run in planned:
            runner.context(run)
        print(f"sources in {args.out}/sources: {sorted(runner.sources)}")
        return
    todo = [run for run in planned if run_id(run) not in done]
    print(
        f"{len(planned)} runs planned, {len(planned) - len(todo)} already in {args.out}/results.csv "
        f"with the same settings; backend {keras.backend.backend()}",
        flush=True,
    )
    rows += run_all(todo, args)
    table = report.summarize(rows, SETTINGS, args.baseline, notes=data_notes(rows, args))
    table += "\n" + "\n".join(gamma_notes(rows, args))
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    for path in report.write_plots(rows, SETTINGS, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
