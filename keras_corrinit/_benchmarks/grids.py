"""The comparison grids behind docs/evidence.md: `keras-corrinit compare --grid NAME`.

Sized for 2 CPU cores (TensorFlow, seconds per run: digits 3, digits32 10,
VGG-8 at width 0.25 on digits32 13).
"""

_SCALE_ARMS = ["uncorrelated", "correlated", "correlated~var", "correlated_weight", "correlated_weight~sum"]
_PAPER_ARMS = [*_SCALE_ARMS, "correlated_learned", "correlated_learned~var", "correlated_layerwise"]

GRIDS = {
    # the paper's grid (Tables 2-4, Figures 4-6) with the small CNN: 320 runs
    "paper-digits": "--dataset digits --lr 0.005 0.1 --l2 0 0.001 --batch-norm off on --seeds 5 --init".split()
    + _PAPER_ARMS,
    # the same on spatially correlated inputs, without the L2 axis: 120 runs
    "paper-digits32": "--dataset digits32 --lr 0.005 0.1 --batch-norm off on --seeds 5 --init".split()
    + [*_SCALE_ARMS, "correlated_learned"],
    # Table 5: the strength factor alpha, at one setting: 45 runs
    "alpha-digits32": "--dataset digits32 --alpha 0.25 0.5 1 1.5 --seeds 5 --init".split()
    + ["uncorrelated", "correlated", "correlated~var"],
    # the NFM/AGOP poster's arms, EnhancedGamma and LSUV, at one setting: 55 runs
    "poster-digits": "--dataset digits --seeds 5 --init uncorrelated he_normal he_uniform random_normal".split()
    + "random_uniform nfm nfm_kaiming agop agop_kaiming enhanced_gamma lsuv".split(),
    # a deeper network on the spatially correlated digits: 50 runs
    "vgg8-digits32": "--dataset digits32 --network vgg8 --width 0.25 --batch-norm off on --seeds 5 --init".split()
    + _SCALE_ARMS,
    # depthwise covariance (Trockman et al. 2023): ConvMixer-6/k7, trained and with frozen depthwise filters,
    # learned covariances from a ConvMixer-4/k5 (other depth and kernel size): 60 runs
    "convmixer-digits32": "--dataset digits32 --network convmixer6k7 convmixer6k7_frozen --source-network convmixer4k5"
    " --batch-norm on --optimizer adam --lr 0.005 --epochs 3 --seeds 5 --baseline depthwise_default --init".split()
    + "depthwise_default depthwise_he covariance_closed_form covariance_closed_form~var covariance_learned".split()
    + ["covariance_learned~var"],
}
