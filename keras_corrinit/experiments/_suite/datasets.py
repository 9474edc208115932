"""Data sets for the comparisons: offline digits (8x8 and 32x32) and TFDS.

* `digits`: scikit-learn's 1,797 real 8x8 scans of handwritten digits
  (shipped inside scikit-learn, no download), 75/25 train/test split.
* `digits32`: the same scans and split, resized to 32x32 by bilinear
  interpolation and shifted by up to 2 pixels in each direction (a fixed
  random shift per image), so that inputs are spatially correlated at the
  scale of a 3x3 filter the way natural images are (the correlated-
  initialization paper's premise). 8x8 digits are not: neighbouring pixels
  there are 4 of the 32x32 version's pixels apart.
* `photos32`: natural images without a download: 32x32 crops of ten colour
  photographs that ship inside scikit-image (astronaut, chelsea, coffee,
  hubble_deep_field, immunohistochemistry, retina, rocket), scikit-learn
  (china, flower) and matplotlib (grace_hopper); the class is the
  photograph. Each photograph is resized (box filter) to a shorter side of
  384 pixels and cut into a grid of 64x64 blocks; one block in four (a
  diagonal pattern over the whole photograph) is a test block, the others
  are training blocks. A crop lies inside one block, so train and test
  crops never overlap in space. 300 training and 100 test crops per class,
  at random positions inside random blocks of their split (fixed seed).
* `cifar10`, `cifar100`, `svhn`: tensorflow-datasets, where a machine has them.
"""

import functools
import os

import numpy as np

TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped"}
DATASETS = ["digits", "digits32", "photos32", *TFDS_NAMES]


def load_digits(test_fraction=0.25, split_seed=0):
    # scikit-learn and tensorflow-datasets are optional extras, needed only
    # by the data set that uses them.
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    order = np.random.default_rng(split_seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    return (x[order[n_test:]], y[order[n_test:]]), (x[order[:n_test]], y[order[:n_test]]), 10


def resize_bilinear(images, size):
    """(n, h, w, c) -> (n, size, size, c), bilinear, pixel centres aligned."""
    n, h, w, c = images.shape

    def weights(old, new):
        # Position of each new pixel centre on the old grid, clamped at the edges.
        position = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, old - 1)
        return low, high, (position - low).astype("float32")

    r0, r1, fr = weights(h, size)
    c0, c1, fc = weights(w, size)
    rows = images[:, r0] * (1 - fr)[None, :, None, None] + images[:, r1] * fr[None, :, None, None]
    return rows[:, :, c0] * (1 - fc)[None, None, :, None] + rows[:, :, c1] * fc[None, None, :, None]


def shift(images, max_shift, seed):
    """Each image moved by a random (dy, dx) in [-max_shift, max_shift], zero fill."""
    rng = np.random.default_rng(seed)
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = rng.integers(0, 2 * max_shift + 1, size=(n, 2))
    return np.stack([padded[i, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


def load_digits32(max_shift=2):
    (x_train, y_train), (x_test, y_test), classes = load_digits()
    make = lambda x, seed: shift(resize_bilinear(x, 32), max_shift, seed).astype("float32")
    return (make(x_train, 1), y_train), (make(x_test, 2), y_test), classes


PHOTOGRAPHS = (
    "astronaut",
    "chelsea",
    "china",
    "coffee",
    "flower",
    "grace_hopper",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)
PHOTO_BLOCK = 64


def photograph(name):
    """One of `PHOTOGRAPHS` as (h, w, 3) uint8, from the package that ships it."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    if name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
            return np.asarray(Image.open(file).convert("RGB"))
    import skimage.data

    return getattr(skimage.data, name)()


def photo_blocks(shape, block=PHOTO_BLOCK):
    """The (row, column) corners of the blocks of a photograph, as (train, test)."""
    rows, columns = shape[0] // block, shape[1] // block
    corners = [(i * block, j * block, (i + 2 * j) % 4 == 0) for i in range(rows) for j in range(columns)]
    return [c[:2] for c in corners if not c[2]], [c[:2] for c in corners if c[2]]


def photo_crops(photographs, train_per_class=300, test_per_class=100, shorter_side=384, seed=0):
    """32x32 crops of photographs (class = photograph), train and test from disjoint blocks.

    Returns `(x_train, y_train), (x_test, y_test)` (uint8 crops, int32
    labels) and, for each crop, its photograph's (top, left) corner:
    `(train_corners, test_corners)`.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    crops, labels, corners = ([], []), ([], []), ([], [])
    for label, photo in enumerate(photographs):
        image = Image.fromarray(photo)
        scale = shorter_side / min(image.size)
        image = np.asarray(image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.BOX))
        for split, (blocks, count) in enumerate(zip(photo_blocks(image.shape), (train_per_class, test_per_class))):
            chosen = rng.integers(0, len(blocks), size=count)
            offsets = rng.integers(0, PHOTO_BLOCK - 32 + 1, size=(count, 2))
            for b, (dy, dx) in zip(chosen, offsets):
                top, left = blocks[b][0] + dy, blocks[b][1] + dx
                crops[split].append(image[top : top + 32, left : left + 32])
                corners[split].append((top, left))
            labels[split].extend([label] * count)
    splits = [(np.stack(x), np.asarray(y, dtype="int32")) for x, y in zip(crops, labels)]
    return splits, corners


def load_photos32():
    (train, test), _ = photo_crops([photograph(name) for name in PHOTOGRAPHS])
    scale = lambda pair: (pair[0].astype("float32") / 255.0, pair[1])
    return scale(train), scale(test), len(PHOTOGRAPHS)


def adjacent_pixel_correlation(images):
    """Pearson correlation of horizontally and vertically adjacent pixels, pooled."""
    x = np.asarray(images, dtype=np.float64)
    a = np.concatenate([x[:, :, :-1].ravel(), x[:, :-1, :].ravel()])
    b = np.concatenate([x[:, :, 1:].ravel(), x[:, 1:, :].ravel()])
    return float(np.corrcoef(a, b)[0, 1])


def load_tfds(name, data_dir=None):
    import tensorflow_datasets as tfds

    tfds_name = TFDS_NAMES[name]
    try:
        splits = tfds.load(tfds_name, split=["train", "test"], as_supervised=True, data_dir=data_dir)
        # element-wise iteration: batch_size=-1 crashes under tfds.testing.mock_data
        (x_train, y_train), (x_test, y_test) = [
            tuple(np.stack(column) for column in zip(*tfds.as_numpy(split))) for split in splits
        ]
        classes = tfds.builder(tfds_name, data_dir=data_dir).info.features["label"].num_classes
    except Exception as error:  # TFDS raises several types for a failed download
        folder = data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
        raise ValueError(
            f"tensorflow-datasets could not load {tfds_name!r} ({type(error).__name__}: "
            f"{str(error)[:200]}). On a machine with internet run "
            f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{tfds_name}')\"`, "
            f"copy the folder ~/tensorflow_datasets/{tfds_name} into {folder}, and "
            "pass that parent folder as --data-dir."
        ) from error
    scale = lambda x: x.astype("float32") / 255.0
    return (scale(x_train), y_train.astype("int32")), (scale(x_test), y_test.astype("int32")), classes


@functools.cache
def load(name, data_dir=None, max_train=None, max_test=None):
    """`((x_train, y_train), (x_test, y_test), classes)`, optionally cut to a random subset.

    Loaded once per process for each set of arguments (the arrays are shared:
    do not modify them).
    """
    if name == "digits":
        train, test, classes = load_digits()
    elif name == "digits32":
        train, test, classes = load_digits32()
    elif name == "photos32":
        train, test, classes = load_photos32()
    elif name in TFDS_NAMES:
        train, test, classes = load_tfds(name, data_dir)
    else:
        raise ValueError(f"Unknown data set {name!r}; choose from {DATASETS}.")
    return _subset(train, max_train), _subset(test, max_test), classes


def _subset(pair, n):
    """`n` samples drawn without replacement (seed 0; original order kept), not the first `n`: photos32
    is stored class by class, so its first samples are all of one photograph."""
    if n is None or n >= len(pair[1]):
        return pair
    chosen = np.sort(np.random.default_rng(0).permutation(len(pair[1]))[:n])
    return pair[0][chosen], pair[1][chosen]
