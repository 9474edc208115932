"""The comparison grids behind docs/evidence.md: `keras-corrinit compare --grid NAME`.

Sized for 2 CPU cores (TensorFlow, seconds per run: digits 3, digits32 10,
VGG-8 at width 0.25 on digits32 13).
"""

_SCALE_ARMS = ["he", "correlated", "correlated~var", "correlated_weight", "correlated_weight~sum"]
_PAPER_ARMS = [*_SCALE_ARMS, "correlated_learned", "correlated_learned~var", "correlated_layerwise"]
# The paper's protocol: 10 epochs at a constant rate, Algorithm 1's own baseline (He with R = I).
_PAPER = "--epochs 10 --baseline he".split()

GRIDS = {
    # the paper's Algorithm 1 against He and its scale controls on digits, at one setting: 25 runs, ~100 s
    # (the main job of 0.2.0)
    "digits": [*"--dataset digits --seeds 5".split(), *_PAPER, "--init", *_SCALE_ARMS],
    # the paper's grid (Tables 2-4, Figures 4-6) with the small CNN: 320 runs
    "paper-digits": _PAPER
    + "--dataset digits --lr 0.005 0.1 --l2 0 0.001 --batch-norm off on --seeds 5 --init".split()
    + _PAPER_ARMS,
    # the same on spatially correlated inputs, without the L2 axis: 120 runs
    "paper-digits32": _PAPER
    + "--dataset digits32 --lr 0.005 0.1 --batch-norm off on --seeds 5 --init".split()
    + [*_SCALE_ARMS, "correlated_learned"],
    # Table 5: the strength factor alpha, at one setting: 45 runs
    "alpha-digits32": _PAPER
    + "--dataset digits32 --alpha 0.25 0.5 1 1.5 --seeds 5 --init".split()
    + ["he", "correlated", "correlated~var"],
    # the NFM/AGOP poster's arms, EnhancedGamma and LSUV, at one setting: 55 runs
    "poster-digits": _PAPER
    + "--dataset digits --seeds 5 --init he he_normal he_uniform random_normal".split()
    + "random_uniform nfm nfm_kaiming agop agop_kaiming enhanced_gamma lsuv".split(),
    # a deeper network on the spatially correlated digits: 50 runs
    "vgg8-digits32": _PAPER
    + "--dataset digits32 --network vgg8 --width 0.25 --batch-norm off on --seeds 5 --init".split()
    + _SCALE_ARMS,
    # depthwise covariance (Trockman et al. 2023): ConvMixer-6/k7, trained and with frozen depthwise filters,
    # learned covariances from a ConvMixer-4/k5 (other depth and kernel size): 60 runs
    "convmixer-digits32": "--dataset digits32 --network convmixer6k7 convmixer6k7_frozen --source-network convmixer4k5"
    " --batch-norm on --optimizer adam --lr 0.005 --epochs 3 --seeds 5 --baseline depthwise_default --init".split()
    + "depthwise_default depthwise_he covariance_closed_form covariance_closed_form~var covariance_learned".split()
    + ["covariance_learned~var"],
}

# Issue 30's evidence matrix: time to accuracy under the budget protocol (each run annealed to a zero
# learning rate at its budget), the network as written as the baseline, peers in the same run; CPU-sized
# (photos32 cut to 1,500 training crops, budgets 1, 2, 4, 5 paired seeds). One grid per architecture family,
# in the order `evidence/evidence_matrix.py` runs them (the decisive cells first); each writes its own store
# (resumable). Every grid has the network as written, He, `initialize` (its defaults) and AnyInit; LSUV on
# three families, initialize's scale control on two, and the ablation of each default that 0.3.1 changed:
# `initialize_normalized_lsuv` (kernels in front of batch norm scaled by LSUV, as before 0.3.1) on the
# batch-norm families, `initialize_head_zero` (the zero head of 0.3.0) where the head mattered most,
# `initialize_residual_zero_gamma` (0.3.1's zero residual gammas) on the one family with such branches.
# 0.3.2 changed `initialize`'s weights only on networks with a residual branch ending in batch norm: of
# these, ResNet-20 (`initialize(...).residual_ends` is empty on the others at 0.3.1's `residual="zero_gamma"`
# too), so only its grids were re-run at 0.3.2; 0.3.1's runs of them are in git history (41feb36).
# The 0.3.0 matrix (zero head, LSUV in front of batch norm) is in git history (85a6d01:evidence/results/matrix-0.3.0/);
# its grids are reproducible at that release (`git checkout v0.3.0`).
_MATRIX = "--dataset photos32 --max-train 1500 --budgets 1 2 4 --seeds 5 --baseline default --init".split() + [
    "default",
    "he",
    "initialize",
    "anyinit",
]
_MOBILENET = "--network mobilenet --width 0.5 --batch-norm on --optimizer adam --lr 0.001".split()
_KERAS_IO = "--network keras_io --optimizer adam --lr 0.001 --batch-size 128".split()
MATRIX = {
    # MobileNet-like separable network at width 0.5, batch norm with momentum 0.9 (Keras's 0.99 has not
    # settled its moving averages in a few hundred steps: the network as written tests near chance although
    # it trains -- the confound `matrix-mobilenet` shows), Adam
    "matrix-mobilenet-bn09": _MATRIX + ["lsuv", "initialize_normalized_lsuv", *_MOBILENET, "--bn-momentum", "0.9"],
    # keras.io's "Simple MNIST convnet" as published: softmax head, Adam 1e-3, batch 128
    "matrix-keras_io": _MATRIX + ["lsuv", "initialize_scale", "initialize_head_zero", *_KERAS_IO],
    # the small ViT (patch 4, 4 blocks, 4 heads, 64 dimensions), Adam
    "matrix-vit": _MATRIX + "lsuv initialize_head_zero --network vit --optimizer adam --lr 0.001".split(),
    # ResNet-20 with batch norm (momentum 0.9, as MobileNet's control), Adam; and SGD at Keras's momentum
    "matrix-resnet20-adam-bn09": _MATRIX
    + ["initialize_normalized_lsuv", "initialize_residual_zero_gamma"]
    + "--network resnet20 --batch-norm on --optimizer adam --lr 0.001".split()
    + ["--bn-momentum", "0.9"],
    # VGG-8 at width 0.25 without batch norm, SGD
    "matrix-vgg8": _MATRIX + "initialize_scale --network vgg8 --width 0.25 --batch-norm off --lr 0.005".split(),
    # the second data set, digits32 (handwritten digits at 32x32, 1,347 training images), for the family
    # that was written for digits
    "matrix-keras_io-digits32": _MATRIX
    + ["lsuv", "initialize_scale", "initialize_head_zero", *_KERAS_IO]
    + ["--dataset", "digits32"],
    # the batch-norm confound, kept in view: MobileNet at Keras's momentum 0.99
    "matrix-mobilenet": _MATRIX + _MOBILENET,
    "matrix-resnet20-sgd": _MATRIX
    + ["initialize_residual_zero_gamma"]
    + "--network resnet20 --batch-norm on --optimizer sgd --lr 0.05 --momentum 0.9".split(),
    # ... and its control for that confound: batch norm at momentum 0.9 (where zero residual gammas help)
    "matrix-resnet20-sgd-bn09": _MATRIX
    + ["initialize_residual_zero_gamma"]
    + "--network resnet20 --batch-norm on --optimizer sgd --lr 0.05 --momentum 0.9 --bn-momentum 0.9".split(),
}
# Which of `initialize`'s choices puts it below ResNet-20 as written with settled batch norm and Adam: the
# zero residual gammas, the identity directions, the whitened stem, or touching the kernels in front of
# batch norm at all (`initialize_normalized_keep`). Its default and initialize arms are the matrix grid's
# runs (same settings, same keys: copy that grid's runs.jsonl into the output folder to reuse them).
GRIDS["ablation-resnet20-adam-bn09"] = MATRIX["matrix-resnet20-adam-bn09"] + (
    "--init default initialize initialize_residual_keep initialize_rest_he initialize_no_whitening".split()
    + ["initialize_normalized_keep"]
)
# The same choice with SGD (batch norm at Keras's momentum), from that matrix grid's runs likewise.
GRIDS["ablation-resnet20-sgd"] = (
    MATRIX["matrix-resnet20-sgd"] + "--init default initialize initialize_residual_keep".split()
)
# ... and its control for batch norm's confound: SGD with batch norm at momentum 0.9, as the Adam grid.
GRIDS["ablation-resnet20-sgd-bn09"] = MATRIX["matrix-resnet20-sgd"] + (
    "--init default he initialize initialize_residual_keep --bn-momentum 0.9".split()
)
GRIDS.update(MATRIX)

# Issue 38's batch-norm grids: `initialize` on batch-norm networks as written (Keras's momentum 0.99) and with
# settled moving averages (0.9), with SGD and Adam; the budget protocol (budgets 1, 2, 4, 5 paired seeds,
# photos32 cut to 1,500 training crops). Arms: the network as written, `initialize` (0.4.0: passes with batch
# statistics, moving statistics set from the data, residual branches scaled to a tenth of their shortcut's
# variance), its residual branches kept (`initialize_residual_keep`), its passes and statistics as in 0.3.2
# (`initialize_statistics_keep`), AnyInit, and the recalibrated rows (`+recalibrate`: PreciseBN before each
# evaluation). The ResNet-20 grids' committed runs were made while `initialize`'s residual default was still
# "keep" (see docs/evidence.md: their `initialize` rows are today's `initialize_residual_keep`, their
# `initialize_residual_scaled` rows today's `initialize`). In `evidence/evidence_matrix.py --set batchnorm`'s
# order: the decisive cells first.
_BATCH_NORM = "--dataset photos32 --max-train 1500 --budgets 1 2 4 --seeds 5 --baseline default --init".split() + [
    "default",
    "initialize",
    "initialize_residual_keep",
    "initialize_statistics_keep",
    "anyinit",
    "default+recalibrate",
    "initialize+recalibrate",
]
_RESNET20_SGD = "--network resnet20 --batch-norm on --optimizer sgd --lr 0.05 --momentum 0.9".split()
_RESNET20_ADAM = "--network resnet20 --batch-norm on --optimizer adam --lr 0.001".split()
# keras.io's "Image classification from scratch" network as published (a small Xception: separable
# convolutions, batch norm at Keras's momentum, residual adds with 1x1 projection shortcuts), shrunk in width
# only, Adam at its published 3e-4
_XCEPTION = "--network keras_io_xception --width 0.25 --batch-norm on --optimizer adam --lr 0.0003".split()
BATCH_NORM = {
    "bn-resnet20-sgd": _BATCH_NORM + _RESNET20_SGD,
    "bn-resnet20-adam": _BATCH_NORM + _RESNET20_ADAM,
    "bn-mobilenet-adam": _BATCH_NORM + _MOBILENET,
    "bn-resnet20-sgd-bn09": _BATCH_NORM + _RESNET20_SGD + ["--bn-momentum", "0.9"],
    "bn-resnet20-adam-bn09": _BATCH_NORM + _RESNET20_ADAM + ["--bn-momentum", "0.9"],
    "bn-mobilenet-adam-bn09": _BATCH_NORM + _MOBILENET + ["--bn-momentum", "0.9"],
    "bn-keras_io_xception": _BATCH_NORM + _XCEPTION,
}
GRIDS.update(BATCH_NORM)

# The same families trained the way their authors would: a constant learning rate for 8 epochs (no budget
# protocol: a method that leads early can end below), the optimizer and batch-norm momentum as written, 5
# paired seeds; the network as written against `initialize`.
_AS_TRAINED = "--dataset photos32 --max-train 1500 --epochs 8 --seeds 5 --baseline default --init default".split() + [
    "initialize"
]
AS_TRAINED = {
    "bn8-resnet20-adam": _AS_TRAINED + _RESNET20_ADAM,
    "bn8-resnet20-sgd": _AS_TRAINED + _RESNET20_SGD,
    "bn8-keras_io_xception": _AS_TRAINED + _XCEPTION,
}
GRIDS.update(AS_TRAINED)
