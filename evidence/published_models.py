"""Models as users get them, for `evidence/initialize_applications.py`: keras.io examples and a model library.

Each maker returns a fresh, built model for 32x32x3 inputs on 0-255 pixels and 10 classes, written the way
its source writes it (custom `keras.layers.Layer` subclasses where the source has them), shrunk in size only:

* `keras_io_vit`: "Image classification with Vision Transformer" (a `Patches` layer, a `PatchEncoder` layer
  holding a Dense and an Embedding, functional encoder blocks, softmax-free logits as published);
* `keras_io_cct`: "Compact Convolutional Transformers" (a `CCTTokenizer` layer holding a Sequential of
  Conv2D and pooling, a sequence-pooling head);
* `keras_io_convmixer`: "Image classification with ConvMixer" (functional, depthwise and pointwise mixers);
* `transformer_layers`: a ViT whose patch embedding and encoder blocks are `Layer` subclasses (one object
  per block holding LayerNormalization, MultiHeadAttention and Dense sublayers);
* `keras_hub_resnet18`, `keras_hub_vit`: KerasHub (`pip install keras-hub`) built from configuration,
  no presets: a basic-block ResNet-18 and a small ViT with `ImageClassifier` heads.
"""

import keras
from keras import layers, ops


def _inputs(scale=True):
    inputs = keras.Input((32, 32, 3))
    return inputs, (layers.Rescaling(1 / 255.0)(inputs) if scale else inputs)


class Patches(layers.Layer):
    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        patches = ops.image.extract_patches(images, size=self.patch_size)
        batch, rows, columns, depth = ops.shape(patches)
        return ops.reshape(patches, (batch, rows * columns, depth))


class PatchEncoder(layers.Layer):
    def __init__(self, num_patches, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection = layers.Dense(units=projection_dim)
        self.position_embedding = layers.Embedding(input_dim=num_patches, output_dim=projection_dim)

    def call(self, patch):
        positions = ops.expand_dims(ops.arange(start=0, stop=self.num_patches, step=1), axis=0)
        return self.projection(patch) + self.position_embedding(positions)


def _mlp(x, hidden_units, dropout_rate):
    for units in hidden_units:
        x = layers.Dense(units, activation=keras.activations.gelu)(x)
        x = layers.Dropout(dropout_rate)(x)
    return x


def keras_io_vit(dim=32, depth=2, heads=4):
    inputs, x = _inputs()
    patches = Patches(4)(x)
    encoded = PatchEncoder(64, dim)(patches)
    for _ in range(depth):
        x1 = layers.LayerNormalization(epsilon=1e-6)(encoded)
        attention = layers.MultiHeadAttention(num_heads=heads, key_dim=dim, dropout=0.1)(x1, x1)
        x2 = layers.Add()([attention, encoded])
        x3 = layers.LayerNormalization(epsilon=1e-6)(x2)
        x3 = _mlp(x3, [dim * 2, dim], 0.1)
        encoded = layers.Add()([x3, x2])
    representation = layers.LayerNormalization(epsilon=1e-6)(encoded)
    representation = layers.Dropout(0.5)(layers.Flatten()(representation))
    features = _mlp(representation, [128, 64], 0.5)
    return keras.Model(inputs, layers.Dense(10)(features), name="keras_io_vit")


class CCTTokenizer(layers.Layer):
    def __init__(self, kernel_size=3, stride=1, padding=1, pooling_kernel_size=3, pooling_stride=2, **kwargs):
        super().__init__(**kwargs)
        self.conv_model = keras.Sequential()
        for filters in (32, 64):
            self.conv_model.add(
                layers.Conv2D(filters, kernel_size, stride, padding="valid", use_bias=False, activation="relu")
            )
            self.conv_model.add(layers.ZeroPadding2D(padding))
            self.conv_model.add(layers.MaxPooling2D(pooling_kernel_size, pooling_stride, "same"))

    def call(self, images):
        outputs = self.conv_model(images)
        return ops.reshape(outputs, (-1, outputs.shape[1] * outputs.shape[2], outputs.shape[-1]))


def keras_io_cct(depth=2, heads=2, dim=64):
    inputs, x = _inputs()
    encoded = CCTTokenizer()(x)
    for _ in range(depth):
        x1 = layers.LayerNormalization(epsilon=1e-5)(encoded)
        attention = layers.MultiHeadAttention(num_heads=heads, key_dim=dim, dropout=0.1)(x1, x1)
        x2 = layers.Add()([attention, encoded])
        x3 = layers.LayerNormalization(epsilon=1e-5)(x2)
        x3 = _mlp(x3, [dim, dim], 0.1)
        encoded = layers.Add()([x3, x2])
    representation = layers.LayerNormalization(epsilon=1e-5)(encoded)
    weights = ops.softmax(layers.Dense(1)(representation), axis=1)
    weighted = layers.Lambda(lambda t: ops.squeeze(ops.matmul(ops.transpose(t[0], (0, 2, 1)), t[1]), -2))(
        [weights, representation]
    )
    return keras.Model(inputs, layers.Dense(10)(weighted), name="keras_io_cct")


def keras_io_convmixer(filters=64, depth=4, kernel_size=5, patch_size=2):
    inputs, x = _inputs()
    x = layers.Conv2D(filters, kernel_size=patch_size, strides=patch_size)(x)
    x = layers.BatchNormalization()(layers.Activation("gelu")(x))
    for _ in range(depth):
        x0 = x
        x = layers.DepthwiseConv2D(kernel_size=kernel_size, padding="same")(x)
        x = layers.Add()([layers.BatchNormalization()(layers.Activation("gelu")(x)), x0])
        x = layers.Conv2D(filters, kernel_size=1)(x)
        x = layers.BatchNormalization()(layers.Activation("gelu")(x))
    x = layers.GlobalAvgPool2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="keras_io_convmixer")


class PatchEmbedding(layers.Layer):
    def __init__(self, dim, patch, **kwargs):
        super().__init__(**kwargs)
        self.projection = layers.Conv2D(dim, patch, strides=patch, name="projection")
        self.norm = layers.LayerNormalization(name="norm")

    def call(self, images):
        x = self.projection(images)
        return self.norm(ops.reshape(x, (-1, x.shape[1] * x.shape[2], x.shape[3])))


class EncoderBlock(layers.Layer):
    def __init__(self, dim, heads, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = layers.LayerNormalization(name="norm1")
        self.attention = layers.MultiHeadAttention(heads, dim // heads, name="att")
        self.norm2 = layers.LayerNormalization(name="norm2")
        self.fc1 = layers.Dense(dim * 2, activation="gelu", name="fc1")
        self.fc2 = layers.Dense(dim, name="fc2")

    def call(self, x):
        y = self.norm1(x)
        x = x + self.attention(y, y)
        return x + self.fc2(self.fc1(self.norm2(x)))


def transformer_layers(dim=64, depth=2, heads=4):
    inputs, x = _inputs()
    x = PatchEmbedding(dim, 4, name="embed")(x)
    for i in range(depth):
        x = EncoderBlock(dim, heads, name=f"block{i + 1}")(x)
    x = layers.GlobalAveragePooling1D()(layers.LayerNormalization()(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="head")(x), name="transformer_layers")


def keras_hub_resnet18():
    import keras_hub  # noqa: PLC0415 (an optional model library)

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[2, 2, 2, 2],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        image_shape=(32, 32, 3),
    )
    inputs, x = _inputs()
    classifier = keras_hub.models.ResNetImageClassifier(backbone, num_classes=10, activation="softmax")
    return keras.Model(inputs, classifier(x), name="keras_hub_resnet18")


def keras_hub_vit():
    import keras_hub  # noqa: PLC0415 (an optional model library)

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=4, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128
    )
    inputs, x = _inputs()
    classifier = keras_hub.models.ViTImageClassifier(backbone, num_classes=10, activation="softmax")
    return keras.Model(inputs, classifier(x), name="keras_hub_vit")


MAKERS = {
    "keras_io_vit": keras_io_vit,
    "keras_io_cct": keras_io_cct,
    "keras_io_convmixer": keras_io_convmixer,
    "transformer_layers": transformer_layers,
    "keras_hub_resnet18": keras_hub_resnet18,
    "keras_hub_vit": keras_hub_vit,
}
