"""`keras-corrinit compare`: the built-in benchmarks, on `keras_corrinit.experiments.compare`.

Arms (see `arms.py`) x data sets x networks x widths x batch norm x
learning rates x L2 x alpha x seeds, trained with SGD (or Adam) and
GradientSignMonitor on. Every (data set, network, width, batch norm,
learning rate, L2) cell is one `compare` call on the package's networks and
data, all of them sharing one results store in `--out` (resumable: a run
whose settings all equal a finished one's is not repeated). Writes:

* `store.json`, `runs.jsonl`: the store (one row per run, every setting);
* `sources/<id>.keras`: source networks of the learned arms, trained once
  on the training split (never the test split) and reused;
* `results.md` (also printed): each data set's adjacent-pixel correlation,
  then one table per cell (paired differences to `--baseline` with 95% t
  intervals, epochs to the baseline's final accuracy, scale-control
  verdicts), and EnhancedGamma's distance from its base at initialization;
* `curves_<cell>.png`: test accuracy and gradient sign changes per epoch.

Runs go to `--workers N` local processes or a Dask cluster (`--dask
ADDRESS`); the rows are the same, seed for seed. `--grid NAME` runs one of
the grids behind docs/evidence.md (`--grid list` lists them).
"""

import concurrent.futures
import dataclasses
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import re

import keras
import numpy as np

from keras_corrinit._core.layers import walk_layers
from keras_corrinit.experiments import compare
from keras_corrinit.experiments._suite import arms, datasets, networks, options
from keras_corrinit.experiments._suite.grids import GRIDS
from keras_corrinit.extraction import CorrelationEstimate
from keras_corrinit.layerwise import layer_seeds


@dataclasses.dataclass(frozen=True)
class NetworkBuilder:
    """`build_model(kernel_initializer, seed)` for one of the package's networks, compiled (picklable)."""

    network: str
    input_shape: tuple
    classes: int
    batch_norm: bool
    width: float
    l2: float
    optimizer: str
    lr: float
    momentum: float
    bn_momentum: float = 0.99  # Keras's BatchNormalization default

    def __call__(self, kernel_initializer, seed):
        model = networks.build(
            self.network,
            self.input_shape,
            self.classes,
            lambda: kernel_initializer,
            batch_norm=self.batch_norm,
            width=self.width,
            l2=self.l2,
        )
        for layer in walk_layers(model):  # read when the layer trains, so set after building
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = self.bn_momentum
        optimizer = (
            keras.optimizers.SGD(self.lr, momentum=self.momentum)
            if self.optimizer == "sgd"
            else keras.optimizers.Adam(self.lr)
        )
        logits = self.network not in networks.SOFTMAX_HEADS  # a published softmax head stays as published
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=logits), metrics=["accuracy"])
        return model


def load_split(name, data_dir, max_train, max_test):
    """`(train, test)` of a data set (what `compare`'s workers call)."""
    train, test, _ = datasets.load(name, data_dir, max_train, max_test)
    return train, test


def correlation_id(path):
    """Identity of an R file: its name and a hash of its content."""
    if path is None:
        return "builtin"
    with open(path, "rb") as f:
        return f"{os.path.basename(path)}#{hashlib.sha256(f.read()).hexdigest()[:12]}"


# --------------------------------------------------------------- cells
def cells(args):
    """Every (data set, network, width, batch norm, lr, L2) the arguments ask for."""
    for dataset in args.dataset:
        built_in = dataset in ("digits", "digits32", "photos32")
        network_names = args.network or (["small_cnn"] if built_in else ["vgg8", "resnet10"])
        for network, width, bn, lr, l2 in itertools.product(
            network_names, args.width, args.batch_norm, args.lr, args.l2
        ):
            yield {"dataset": dataset, "network": network, "width": width, "batch_norm": bn, "lr": lr, "l2": l2}


def cell_name(cell):
    text = "_".join(f"{value}" for value in cell.values())
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text)


def run_cell(cell, args, executor):
    """The cell's `Comparison` (its runs trained, or read from the store)."""
    data = datasets.load(cell["dataset"], args.data_dir, args.max_train, args.max_test)
    (x_train, _), _, classes = data
    source_path = None
    if any(arms.uses_source(name) for name in args.init):
        source_path = arms.train_source(arms.source_settings(cell, args), data, args.out)
    correlation = CorrelationEstimate.load(args.correlation) if args.correlation else None
    specs = {}
    # The baseline is trained too when --init leaves it out: every table has it.
    for name in args.init if args.baseline in args.init else [args.baseline, *args.init]:
        for alpha in args.alpha if arms.uses_alpha(name) else [1.0]:
            ctx = arms.Context(
                alpha=alpha,
                correlation=correlation,
                source=arms.load_source(source_path) if source_path and arms.uses_source(name) else None,
                source_path=source_path if arms.uses_source(name) else None,
                gamma_base=args.gamma_base,
                gamma_granularity=args.gamma_granularity,
            )
            specs[arms.arm_label(name, alpha, args.alpha)] = arms.comparison_arms(name, ctx)
    builder = NetworkBuilder(
        cell["network"],
        tuple(x_train.shape[1:]),
        classes,
        cell["batch_norm"] == "on",
        cell["width"],
        cell["l2"],
        args.optimizer,
        cell["lr"],
        args.momentum if args.optimizer == "sgd" else 0.0,
        args.bn_momentum,
    )
    settings = {
        **cell,
        "max_train": args.max_train,
        "max_test": args.max_test,
        "optimizer": args.optimizer,
        "momentum": builder.momentum,
        "bn_momentum": builder.bn_momentum,
        "correlation": correlation_id(args.correlation),
        "gamma": f"{args.gamma_base}/{args.gamma_granularity}",
        "source": os.path.basename(source_path) if source_path else None,
    }
    print(f"--- {cell_name(cell)}", flush=True)
    return compare(
        builder,
        functools.partial(load_split, cell["dataset"], args.data_dir, args.max_train, args.max_test),
        specs,
        seeds=args.seeds,
        epochs=None if args.budgets else args.epochs,
        budgets=args.budgets,
        baseline=args.baseline,
        controls=False,
        batch_size=args.batch_size,
        settings=settings,
        out=args.out,
        executor=executor,
    )


# ----------------------------------------------------------- reporting
def data_notes(args):
    """A line per data set (its adjacent-pixel correlation) and per source network."""
    notes = []
    for name in args.dataset:
        (x_train, _), _, _ = datasets.load(name, args.data_dir, args.max_train, args.max_test)
        notes.append(
            f"- {name}: {x_train.shape[1]}x{x_train.shape[2]} inputs, mean correlation of adjacent "
            f"pixels {datasets.adjacent_pixel_correlation(x_train):.3f}"
        )
    folder = os.path.join(args.out, "sources")
    for summary in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if summary.endswith(".json"):
            with open(os.path.join(folder, summary)) as f:
                saved = json.load(f)
            s = saved["settings"]
            note = (
                f"- source {summary[:-5]}: {s['network']} trained {s['epochs']} epochs (batch norm "
                f"{s['batch_norm']}) on the {s['dataset']} training split, train accuracy {saved['train_accuracy']:.3f}"
            )
            if "mean_offdiagonal_correlation" in saved:
                note += (
                    f"; its pooled 3x3 R has mean off-diagonal correlation {saved['mean_offdiagonal_correlation']:.3f}"
                )
            notes.append(note)
    return "Data:\n\n" + "\n".join(notes)


def _emd_over_std(a, b, scale):
    """Earth mover's distance of two equally large samples (mean gap of their sorted values), over `scale`."""
    return float(np.mean(np.abs(np.sort(a.ravel()) - np.sort(b.ravel())))) / scale


def gamma_notes(cell, args):
    """EnhancedGamma's per-layer distance from its base at initialization (noise floor: two base draws)."""
    if "enhanced_gamma" not in args.init:
        return []
    data = datasets.load(cell["dataset"], args.data_dir, args.max_train, args.max_test)
    (x_train, _), _, classes = data
    ctx = arms.Context(gamma_base=args.gamma_base, gamma_granularity=args.gamma_granularity)
    base = arms.gamma_base(args.gamma_base, ctx)
    kernels = {}
    enhanced = arms.PLAIN["enhanced_gamma"](ctx)
    for label, init, seed in [("enhanced", enhanced, 0), ("base", base, 0), ("again", base, 1)]:
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        seeds, config = iter(layer_seeds(seed, 4096)), init.get_config()
        model = networks.build(
            cell["network"],
            x_train.shape[1:],
            classes,
            lambda init=init, config=config, seeds=seeds: type(init).from_config({**config, "seed": next(seeds)}),
            batch_norm=cell["batch_norm"] == "on",
            width=cell["width"],
        )
        # keyed by position: layer names differ between the three models
        kernels[label] = {
            f"{i}: {type(layer).__name__} {tuple(layer.kernel.shape)}": keras.ops.convert_to_numpy(layer.kernel)
            for i, layer in enumerate(layer for layer in model.layers if hasattr(layer, "kernel"))
        }
    lines = [
        "",
        f"EnhancedGamma ({args.gamma_base}, {args.gamma_granularity}) at initialization: Earth mover's distance "
        f"from {args.gamma_base}, in units of its standard deviation (noise floor: two independent base draws)",
        "",
        "| layer | EMD(enhanced, base) / std | EMD(base, base') / std | ratio |",
        "|---|---|---|---|",
    ]
    for name, kernel in kernels["base"].items():
        scale = float(np.std(kernel))
        distance = _emd_over_std(kernels["enhanced"][name], kernel, scale)
        floor = _emd_over_std(kernels["again"][name], kernel, scale)
        lines.append(f"| {name} | {distance:.4f} | {floor:.4f} | {distance / floor:.1f}x |")
    return lines


# ------------------------------------------------------------ arguments
def parser():
    return options.compare_parser()


def parse_args(argv):
    p = parser()
    args = p.parse_args(argv)
    if args.grid is not None:
        if args.grid == "list":
            print("\n".join(f"{name}: {' '.join(grid)}" for name, grid in GRIDS.items()))
            p.exit(0)
        if args.grid not in GRIDS:
            p.error(f"--grid {args.grid!r} is not a grid; the grids are {sorted(GRIDS)} (or 'list')")
        args = p.parse_args(GRIDS[args.grid] + list(argv))
    args.out = args.out or os.path.join("runs", args.grid or "compare")
    return _checked(p, options.check_compare(p, args))


def _checked(p, args):
    """Arguments that cannot work together, refused with the parser's error."""
    depthwise_arms = [init for init in args.init if arms.needs_depthwise(init)]
    without = [name for name in args.network or ["the default networks"] if name not in networks.CONVMIXERS]
    if depthwise_arms and without:
        p.error(
            f"the arms {depthwise_arms} set depthwise convolutions, which {without} do not have; "
            f"pass --network with ConvMixers only (e.g. convmixer6k7), or run them separately"
        )
    if "covariance_learned" in {arms.split_control(i)[0] for i in args.init} and (
        (args.source_network or (args.network or [""])[0]) not in networks.CONVMIXERS
    ):
        p.error("covariance_learned needs a ConvMixer source: pass --source-network (e.g. convmixer4k5)")
    for name in args.init:
        arm, match = arms.split_control(name)
        if match and arm not in args.init:
            p.error(f"the scale control {name} needs its arm {arm} in --init, before it")
    return args


def _executor(args):
    if args.dask:
        from dask.distributed import Client

        client = Client(args.dask)
        return client.get_executor()
    if args.workers:
        # Clean workers: forking a process that runs TensorFlow or JAX is unsafe.
        return concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    return None


def main(argv=None):
    args = parse_args(argv or [])
    print(f"backend {keras.backend.backend()}; results in {args.out}", flush=True)
    executor = _executor(args)
    sections = []
    try:
        for cell in cells(args):
            result = run_cell(cell, args, executor)
            plot = os.path.join(args.out, f"{'budgets' if args.budgets else 'curves'}_{cell_name(cell)}.png")
            result.plot(plot)
            title = ", ".join(f"{key} {value}" for key, value in cell.items())
            sections.append(f"## {title}\n\n{result.to_markdown()}\n\nPlot: `{os.path.basename(plot)}`")
            sections += ["\n".join(gamma_notes(cell, args))] if "enhanced_gamma" in args.init else []
    finally:
        if executor is not None:
            executor.shutdown()
    report = data_notes(args) + "\n\n" + "\n\n".join(sections) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(report)
    print(report)
    return 0
