"""`keras-corrinit extract`: the spatial correlation of a trained model's filters.

SOURCE is a `keras.applications` name (RESNET50, VGG16, DENSENET121, ...;
ImageNet weights, or `--weights FILE`), a saved `.keras` model, or a
`.weights.h5` file together with `--application NAME`. The command line
itself is parsed by `keras_corrinit_cli` (which answers `--help` without
importing Keras); this module does the work.
"""

import os
import sys
import zipfile

import keras

from keras_corrinit._core.validation import clipped
from keras_corrinit.extraction._applications import correlation_from_application
from keras_corrinit.extraction._estimates import correlation_from_model


def _check_outputs(args):
    """Checks `--out` and `--plot` before any work, so none is lost."""
    for option, path in (("--out", args.out), ("--plot", args.plot)):
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ValueError(f"{option} {path!r}: the folder {folder!r} does not exist or is not writable.")
    if args.plot:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install matplotlib.") from None
        supported = Figure().canvas.get_supported_filetypes()
        extension = os.path.splitext(args.plot)[1].lstrip(".").lower()
        if extension not in supported:
            raise ValueError(f"--plot {args.plot!r}: use one of the extensions {', '.join(sorted(supported))}.")


def _load_model(source):
    if not os.path.isfile(source):
        raise ValueError(f"Model file {source!r} does not exist.")
    if not zipfile.is_zipfile(source):
        # Keras would report such a file as "not found".
        raise ValueError(f"Could not load the model file {source!r}: it is not a .keras file (not a zip archive).")
    try:
        return keras.models.load_model(source, safe_mode=True, compile=False)
    except Exception as error:  # a corrupt or tampered file raises many kinds of error
        raise ValueError(
            f"Could not load the model file {source!r} (not a valid .keras file?): "
            f"{type(error).__name__}: {clipped(error, 300)}"
        ) from None


def _estimate(args):
    source = args.source
    if source.endswith(".keras"):
        model = _load_model(source)
        return correlation_from_model(
            model, args.kernel_size, args.include_depthwise, source=os.path.basename(source), verbose=1
        )
    if source.endswith(".h5"):
        if args.application is None:
            raise ValueError(
                f"{source!r} holds weights only; name the architecture with "
                "--application (e.g. --application ResNet50)."
            )
        return correlation_from_application(
            args.application,
            weights=source,
            kernel_size=args.kernel_size,
            include_depthwise=args.include_depthwise,
            use_cache=not args.no_cache,
        )
    return correlation_from_application(
        source,
        weights=args.weights or "imagenet",
        kernel_size=args.kernel_size,
        include_depthwise=args.include_depthwise,
        use_cache=not args.no_cache,
    )


def extract(args):
    """Runs `keras-corrinit extract` with parsed arguments; returns the exit status."""
    try:
        _check_outputs(args)
        estimate = _estimate(args)
    except (ValueError, TypeError, ConnectionError) as error:
        # Messages from deep inside Keras can quote whole configs: cut them.
        print(f"keras-corrinit: error: {clipped(error, 2000)}", file=sys.stderr)
        return 2
    estimate.save(args.out)
    distances, values, _ = estimate.profile()
    print(
        f"{estimate.source}: {len(estimate.layer_names)} layers with "
        f"{'x'.join(map(str, estimate.spatial_shape))} kernels{' (cached)' if estimate.cached else ''}"
    )
    for d, v in zip(distances, values):
        print(f"  distance {d:.3f}: mean correlation {v:+.4f}")
    print(f"wrote {args.out}")
    if args.plot:
        estimate.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0
