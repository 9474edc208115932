"""How close is the closed-form covariance to learned ones?

    python examples/depthwise_fit.py runs/convmixer-digits32/sources/<id>.keras

For each depthwise layer of a trained model: the `ConstructedFilterCovariance`
parameters (sigma, envelope) whose trace-normalized covariance is nearest
(Frobenius) to the layer's learned one, on a grid; that distance; and the
distance of the defaults at the layer's relative depth, and of the identity
(independent weights of equal variance), for scale.
"""

import argparse
import itertools

import keras
import numpy as np

from keras_corrinit.extraction import depthwise_covariance_from_model
from keras_corrinit.initializers import ConstructedFilterCovariance

GRID = np.round(np.arange(0.1, 3.01, 0.1), 2)


def distance(a, b):
    return float(np.linalg.norm(a / np.trace(a) - b / np.trace(b)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    args = parser.parse_args(argv)
    learned = depthwise_covariance_from_model(keras.models.load_model(args.model))
    print("| layer | relative depth | best sigma | best envelope | distance | defaults' distance | identity's |")
    print("|---|---|---|---|---|---|---|")
    for i, (name, shape, sigma) in enumerate(zip(learned.layers, learned.spatial_shapes, learned.covariances)):
        depth = i / max(len(learned.layers) - 1, 1)
        fits = [
            (distance(sigma, ConstructedFilterCovariance(depth, s, e).covariance_matrix(shape)), s, e)
            for s, e in itertools.product(GRID, GRID)
        ]
        best, s, e = min(fits)
        default = distance(sigma, ConstructedFilterCovariance(depth).covariance_matrix(shape))
        identity = distance(sigma, np.eye(len(sigma)))
        print(f"| {name} | {depth:.2f} | {s} | {e} | {best:.3f} | {default:.3f} | {identity:.3f} |")


if __name__ == "__main__":
    main()
