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
# (photos32 cut to 1,500 training crops, budgets 1, 2, 4). One grid per architecture family, in the order
# `evidence/evidence_matrix.py` runs them; each writes its own store (resumable).
_MATRIX = "--dataset photos32 --max-train 1500 --budgets 1 2 4 --seeds 5 --baseline default --init".split() + [
    "default",
    "he",
    "initialize",
    "lsuv",
    "anyinit",
]
MATRIX = {
    # keras.io's "Simple MNIST convnet" as published: softmax head, Adam 1e-3, batch 128
    # (with initialize's scale control, here and on VGG-8)
    "matrix-keras_io": _MATRIX
    + "initialize_scale --network keras_io --optimizer adam --lr 0.001 --batch-size 128".split(),
    # VGG-8 at width 0.25 without batch norm, SGD
    "matrix-vgg8": _MATRIX + "initialize_scale --network vgg8 --width 0.25 --batch-norm off --lr 0.005".split(),
    # the small ViT (patch 4, 4 blocks, 4 heads, 64 dimensions), Adam
    # (mimetic attention alone on the He-built ViT, and initialize with each of its choices undone)
    "matrix-vit": _MATRIX
    + ["mimetic", "initialize_keep_attention", "initialize_no_whitening", "initialize_rest_keep"]
    + "initialize_head_keep --network vit --optimizer adam --lr 0.001".split(),
    # MobileNet-like separable network at width 0.5 with batch norm, Adam
    "matrix-mobilenet": _MATRIX + "--network mobilenet --width 0.5 --batch-norm on --optimizer adam --lr 0.001".split(),
    # ResNet-20 with batch norm, Adam and SGD
    "matrix-resnet20-adam": _MATRIX + "--network resnet20 --batch-norm on --optimizer adam --lr 0.001".split(),
    "matrix-resnet20-sgd": _MATRIX
    + "--network resnet20 --batch-norm on --optimizer sgd --lr 0.05 --momentum 0.9".split(),
}
# The batch-norm confound's control: Keras's moving averages (momentum 0.99) have not settled in a few
# hundred steps, so a network as written can test at chance although it trains; momentum 0.9 settles them.
MATRIX["matrix-mobilenet-bn09"] = MATRIX["matrix-mobilenet"] + ["--bn-momentum", "0.9"]
# The second data set, digits32 (handwritten digits at 32x32, 1,347 training images), for the family that
# was written for digits.
MATRIX["matrix-keras_io-digits32"] = MATRIX["matrix-keras_io"] + ["--dataset", "digits32"]
# The head rule, measured where the ViT said it matters (initialize_head_keep: +12.4 points there against
# initialize's +7.4): the network as written, initialize, and initialize with its head kept as built.
for _family in ("keras_io", "vgg8", "mobilenet", "resnet20-adam"):
    MATRIX[f"ablation-head-{_family}"] = (
        MATRIX[f"matrix-{_family}"] + "--init default initialize initialize_head_keep".split()
    )
GRIDS.update(MATRIX)
