"""Network builders for the examples: the correlated-initialization paper's
VGG and ResNet variants (Section 6.1), sized for 32x32 inputs, and a small
CNN for 8x8 digits.

Every builder takes `kernel_initializer` (a factory called once per Conv2D
and Dense kernel), `batch_norm` (BatchNormalization after every convolution,
before the ReLU; convs then have no bias), `width` (channel multiplier; the
paper uses 0.5) and `l2` (L2 penalty on every kernel), and returns
an uncompiled functional model with logits as outputs.

Exact layer lists (channels at width 1; "M" = 2x2 max pooling; all convs
3x3, padding "same"; "FC n" = Dense):

* VGG-8:  64 M 128 M 256 256 M 512 512 M, FC 512, FC classes
          (6 conv + 2 dense = 8 weight layers)
* VGG-16: 64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M,
          FC 512, FC 512, FC classes (13 conv + 3 dense)
* VGG-19: as VGG-16 with 4 convs in each of the last three stages
          (16 conv + 3 dense)
* ResNet-10/18/34: CIFAR stem (one 3x3 conv, 64 channels, no pooling),
  basic blocks (two 3x3 convs, identity or 1x1-projection shortcut) with
  [1, 1, 1, 1], [2, 2, 2, 2], [3, 4, 6, 3] blocks in stages of 64, 128,
  256, 512 channels (stride 2 from the second stage), global average
  pooling, FC classes. Counting the stem, the block convs and the head:
  10, 18 and 34 weight layers (projection shortcuts are not counted).
* small_cnn (digits): 32 32 M 64, Flatten, FC classes.
* ConvMixer-<depth>/k<kernel> (`convmixer6k7`): a 2x2-patch embedding
  (Conv2D, 64 channels at width 1, stride 2), GELU, BN; then `depth` blocks
  of x + BN(GELU(DepthwiseConv2D k x k (x))) followed by a 1x1 Conv2D, GELU,
  BN; global average pooling, FC classes (Trockman and Kolter's ConvMixer,
  sized for 32x32 inputs). The depthwise convolutions keep Keras's default
  initializer (`glorot_uniform`): the arms set them after the build.
  `convmixer6k7_frozen`: the same with the depthwise layers not trainable
  (their kernels, and their zero biases, stay as initialized).
* keras_io: keras.io's "Simple MNIST convnet" as published: 32 M 64 M
  (3x3 valid convs, ReLU), Flatten, Dropout 0.5, FC classes with **softmax**
  (its head is the published one: the suite compiles it without
  `from_logits`).
* resnet20: the CIFAR ResNet-20 (He et al. 2016, Section 4.2): a 3x3 stem
  of 16 channels, three stages of three basic blocks (16, 32, 64 channels,
  stride 2 from the second stage, 1x1-projection shortcuts where the shape
  changes), global average pooling, FC classes.
* mobilenet: a MobileNet-like separable network: a 3x3 stem of 32
  channels, then SeparableConv2D 3x3 blocks of 64, 128 (stride 2), 128,
  256 (stride 2) channels, each followed by batch norm (when on) and ReLU,
  global average pooling, FC classes.
* vit: a small vision transformer: 4x4 patches embedded by a Conv2D
  (kernel = stride = 4) to 64 dimensions at width 1, learned position
  embeddings, 4 pre-norm blocks of 4-head self-attention
  (`MultiHeadAttention`) and a GELU MLP of twice the width, a final layer
  norm, mean over tokens, FC classes. `batch_norm` does not apply (layer
  norm throughout).
"""

import functools

import keras


def _l2(l2):
    return keras.regularizers.L2(l2) if l2 else None


def _weights(kernel_initializer, l2):
    """A kernel layer's initializer (a fresh one from the factory) and its L2 penalty, as layer arguments."""
    return {"kernel_initializer": kernel_initializer(), "kernel_regularizer": _l2(l2)}


VGG_LAYOUTS = {
    "vgg8": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
VGG_DENSE = {"vgg8": [512], "vgg16": [512, 512], "vgg19": [512, 512]}
RESNET_BLOCKS = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet20": [3, 3, 3]}
RESNET_BASE = {"resnet20": 16}  # the first stage's channels (64 for the others)


def _conv_bn_relu(x, filters, init, batch_norm, strides=1, relu=True, l2=0.0):
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=not batch_norm,
        **_weights(init, l2),
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x) if relu else x


def vgg(name, input_shape, classes, kernel_initializer, batch_norm=True, width=1.0, l2=0.0):
    inputs = keras.Input(input_shape)
    x = inputs
    for item in VGG_LAYOUTS[name]:
        if item == "M":
            x = keras.layers.MaxPooling2D()(x)
        else:
            x = _conv_bn_relu(x, max(1, int(item * width)), kernel_initializer, batch_norm, l2=l2)
    x = keras.layers.Flatten()(x)
    for units in VGG_DENSE[name]:
        x = keras.layers.Dense(
            max(1, int(units * width)),
            activation="relu",
            **_weights(kernel_initializer, l2),
        )(x)
    outputs = keras.layers.Dense(classes, **_weights(kernel_initializer, l2))(x)
    return keras.Model(inputs, outputs, name=name)


def resnet(name, input_shape, classes, kernel_initializer, batch_norm=True, width=1.0, l2=0.0):
    inputs = keras.Input(input_shape)
    base = RESNET_BASE.get(name, 64)
    x = _conv_bn_relu(inputs, int(base * width), kernel_initializer, batch_norm, l2=l2)
    for stage, blocks in enumerate(RESNET_BLOCKS[name]):
        filters = int(base * 2**stage * width)
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(
                    filters,
                    1,
                    strides=strides,
                    use_bias=not batch_norm,
                    **_weights(kernel_initializer, l2),
                )(x)
                if batch_norm:
                    shortcut = keras.layers.BatchNormalization()(shortcut)
            y = _conv_bn_relu(x, filters, kernel_initializer, batch_norm, strides=strides, l2=l2)
            y = _conv_bn_relu(y, filters, kernel_initializer, batch_norm, relu=False, l2=l2)
            x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, **_weights(kernel_initializer, l2))(x)
    return keras.Model(inputs, outputs, name=name)


def keras_io_convnet(input_shape=(28, 28, 1), classes=10, activation="softmax", kernel_initializer="glorot_uniform"):
    """keras.io's "Simple MNIST convnet" exactly as published (its head's activation and initializer settable)."""
    init = {"kernel_initializer": kernel_initializer}
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu", **init),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu", **init),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(classes, activation=activation, **init),
        ]
    )


def small_cnn(input_shape, classes, kernel_initializer, batch_norm=False, width=1.0, l2=0.0):
    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, int(32 * width), kernel_initializer, batch_norm, l2=l2)
    x = _conv_bn_relu(x, int(32 * width), kernel_initializer, batch_norm, l2=l2)
    x = keras.layers.MaxPooling2D()(x)
    x = _conv_bn_relu(x, int(64 * width), kernel_initializer, batch_norm, l2=l2)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(classes, **_weights(kernel_initializer, l2))(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def convmixer(
    depth,
    kernel_size,
    frozen,
    input_shape,
    classes,
    kernel_initializer,
    batch_norm=True,
    width=1.0,
    l2=0.0,
    patch_size=2,
):
    dim = max(1, int(64 * width))

    def gelu_bn(x):
        x = keras.layers.Activation("gelu")(x)
        # momentum 0.9 (PyTorch's 0.1): short runs leave Keras's 0.99 averages unsettled
        return keras.layers.BatchNormalization(momentum=0.9)(x) if batch_norm else x

    inputs = keras.Input(input_shape)
    x = gelu_bn(keras.layers.Conv2D(dim, patch_size, strides=patch_size, **_weights(kernel_initializer, l2))(inputs))
    for i in range(depth):
        y = keras.layers.DepthwiseConv2D(
            kernel_size, padding="same", name=f"depthwise_{i}", trainable=not frozen, depthwise_regularizer=_l2(l2)
        )(x)
        x = keras.layers.Add()([x, gelu_bn(y)])
        x = gelu_bn(keras.layers.Conv2D(dim, 1, **_weights(kernel_initializer, l2))(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, **_weights(kernel_initializer, l2))(x)
    return keras.Model(inputs, outputs, name=f"convmixer{depth}k{kernel_size}{'_frozen' if frozen else ''}")


def keras_io(input_shape, classes, kernel_initializer, batch_norm=False, width=1.0, l2=0.0):
    """The keras.io convnet as published (softmax head); `width` scales its channels."""
    init = {"kernel_regularizer": _l2(l2)}
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(int(32 * width), 3, activation="relu", kernel_initializer=kernel_initializer(), **init)(
        inputs
    )
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(int(64 * width), 3, activation="relu", kernel_initializer=kernel_initializer(), **init)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Dropout(0.5)(keras.layers.Flatten()(x))
    outputs = keras.layers.Dense(classes, activation="softmax", kernel_initializer=kernel_initializer(), **init)(x)
    return keras.Model(inputs, outputs, name="keras_io")


def keras_io_xception(input_shape, classes, kernel_initializer, batch_norm=True, width=1.0, l2=0.0):
    """keras.io's "Image classification from scratch" network (a small Xception) as published; `width` scales
    its channels.

    Separable convolutions, batch norm at Keras's defaults, residual adds with strided 1x1 projection
    shortcuts, dropout 0.25 and a logits head. The published `Rescaling(1/255)` is left out: the suite's
    images are already in [0, 1]. `batch_norm` and `l2` are ignored (the network is as published).
    """
    del batch_norm, l2

    def size(channels):
        return max(1, int(channels * width))

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(size(128), 3, strides=2, padding="same", kernel_initializer=kernel_initializer())(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    previous = x
    for channels in (256, 512, 728):
        x = keras.layers.Activation("relu")(x)
        for i in range(2):
            if i:
                x = keras.layers.Activation("relu")(x)
            x = keras.layers.SeparableConv2D(
                size(channels),
                3,
                padding="same",
                depthwise_initializer=kernel_initializer(),
                pointwise_initializer=kernel_initializer(),
            )(x)
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
        shortcut = keras.layers.Conv2D(
            size(channels), 1, strides=2, padding="same", kernel_initializer=kernel_initializer()
        )(previous)
        x = keras.layers.add([x, shortcut])
        previous = x
    x = keras.layers.SeparableConv2D(
        size(1024),
        3,
        padding="same",
        depthwise_initializer=kernel_initializer(),
        pointwise_initializer=kernel_initializer(),
    )(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.25)(x)
    outputs = keras.layers.Dense(classes, kernel_initializer=kernel_initializer())(x)
    return keras.Model(inputs, outputs, name="keras_io_xception")


def mobilenet(input_shape, classes, kernel_initializer, batch_norm=True, width=1.0, l2=0.0):
    def bn_relu(x):
        return keras.layers.ReLU()(keras.layers.BatchNormalization()(x) if batch_norm else x)

    inputs = keras.Input(input_shape)
    x = _conv_bn_relu(inputs, int(32 * width), kernel_initializer, batch_norm, l2=l2)
    for filters, strides in ((64, 1), (128, 2), (128, 1), (256, 2)):
        x = keras.layers.SeparableConv2D(
            int(filters * width),
            3,
            strides=strides,
            padding="same",
            use_bias=not batch_norm,
            depthwise_initializer=kernel_initializer(),
            pointwise_initializer=kernel_initializer(),
            pointwise_regularizer=_l2(l2),
        )(x)
        x = bn_relu(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, **_weights(kernel_initializer, l2))(x)
    return keras.Model(inputs, outputs, name="mobilenet")


@keras.saving.register_keras_serializable(package="keras_corrinit_benchmarks")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding per token position (truncated normal, std 0.02, as ViT's)."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=tuple(input_shape[1:]), initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="embedding"
        )

    def call(self, x):
        return x + self.embedding


def vit(input_shape, classes, kernel_initializer, batch_norm=False, width=1.0, l2=0.0, patch=4, depth=4, heads=4):
    dim = max(heads, int(64 * width) // heads * heads)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(dim, patch, strides=patch, **_weights(kernel_initializer, l2), name="patches")(inputs)
    x = PositionEmbedding()(keras.layers.Reshape((-1, dim))(x))
    for i in range(depth):
        y = keras.layers.LayerNormalization(epsilon=1e-6)(x)
        y = keras.layers.MultiHeadAttention(
            heads,
            dim // heads,
            **_weights(kernel_initializer, l2),
            name=f"attention_{i}",
        )(y, y)
        x = keras.layers.Add()([x, y])
        y = keras.layers.LayerNormalization(epsilon=1e-6)(x)
        y = keras.layers.Dense(2 * dim, activation="gelu", kernel_initializer=kernel_initializer())(y)
        y = keras.layers.Dense(dim, kernel_initializer=kernel_initializer())(y)
        x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization(epsilon=1e-6)(x))
    outputs = keras.layers.Dense(classes, **_weights(kernel_initializer, l2))(x)
    return keras.Model(inputs, outputs, name="vit")


# Networks whose published head ends in softmax: the suite compiles them without `from_logits`.
SOFTMAX_HEADS = ("keras_io",)

CONVMIXERS = {
    f"convmixer{depth}k{kernel}{suffix}": functools.partial(convmixer, depth, kernel, bool(suffix))
    for depth in (2, 4, 6, 8)
    for kernel in (3, 5, 7, 9)
    for suffix in ("", "_frozen")
}

NETWORKS = {
    **{name: functools.partial(vgg, name) for name in VGG_LAYOUTS},
    **{name: functools.partial(resnet, name) for name in RESNET_BLOCKS},
    "small_cnn": small_cnn,
    "keras_io": keras_io,
    "keras_io_xception": keras_io_xception,
    "mobilenet": mobilenet,
    "vit": vit,
    **CONVMIXERS,
}


def build(name, input_shape, classes, kernel_initializer, batch_norm=True, width=1.0, l2=0.0):
    """Builds a network by name (see NETWORKS); `kernel_initializer` is a
    zero-argument factory returning a fresh initializer for each layer."""
    if name not in NETWORKS:
        raise ValueError(f"Unknown network {name!r}; choose from {sorted(NETWORKS)}.")
    return NETWORKS[name](input_shape, classes, kernel_initializer, batch_norm=batch_norm, width=width, l2=l2)
