"""Runs the initializers and the monitor under a Keras distribution engine.

Used by `test_distributed.py` in fresh processes, because the devices must be
set up before the backend starts:

    python tests/distributed_worker.py jax OUT_DIR          # 4 forced CPU devices
    python tests/distributed_worker.py tensorflow OUT_DIR   # 2 logical CPUs
    python tests/distributed_worker.py torch OUT_DIR RANK WORLD PORT

Writes `OUT_DIR/kernels*.npz` (single-device and distributed kernels) and
`OUT_DIR/histories*.json` (monitor logs); the test does the checking.
"""

import json
import os
import sys

BACKEND, OUT = sys.argv[1], sys.argv[2]
os.environ["KERAS_BACKEND"] = BACKEND
if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_corrinit as kc  # noqa: E402

NFM_SOURCE = np.random.default_rng(0).normal(size=(3, 3, 16, 32))
DATA_RNG = np.random.default_rng(1)
X = DATA_RNG.normal(size=(64, 8, 8, 3)).astype("float32")
Y = DATA_RNG.integers(0, 4, 64)


def small_cnn():
    """Every initializer of the package, each with an int seed."""
    inputs = x = keras.Input((8, 8, 3))
    convolutions = [
        ("c1", 16, kc.CorrelatedHeNormal(seed=1)),
        ("c2", 16, kc.EnhancedGamma(granularity="spatial", seed=2)),
        ("c3", 32, kc.NFMInit.from_kernel(NFM_SOURCE, seed=3)),
    ]
    for name, filters, initializer in convolutions:
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=name, kernel_initializer=initializer
        )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, name="head", kernel_initializer=kc.CorrelatedHeNormal(seed=4))(x)
    return keras.Model(inputs, outputs)


def big_kernels():
    """Kernels large enough for statistics, drawn from SeedGenerator seeds."""
    layers = {
        "correlated": keras.layers.Conv2D(
            128,
            3,
            kernel_initializer=kc.CorrelatedHeNormal(
                kc.SpatialCorrelation.exponential_decay(0.6), seed=keras.random.SeedGenerator(7)
            ),
        ),
        "gamma": keras.layers.Conv2D(
            256, 3, kernel_initializer=kc.EnhancedGamma(granularity="spatial", seed=keras.random.SeedGenerator(8))
        ),
        "nfm": keras.layers.Conv2D(
            512, 3, kernel_initializer=kc.NFMInit.from_kernel(NFM_SOURCE, seed=keras.random.SeedGenerator(9))
        ),
    }
    in_channels = {"correlated": 128, "gamma": 64, "nfm": 16}
    for name, layer in layers.items():
        layer.build((None, 8, 8, in_channels[name]))
    return {f"big_{name}": np.asarray(keras.ops.convert_to_numpy(layer.kernel)) for name, layer in layers.items()}


def kernels(model):
    return {layer.name: keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")}


def monitored_fit(model, weights):
    model.set_weights(weights)
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    monitor = kc.GradientSignMonitor(per_layer=True)
    history = model.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    return history.history, monitor


def save(suffix, arrays, histories=None):
    np.savez(os.path.join(OUT, f"kernels{suffix}.npz"), nfm_source=NFM_SOURCE, **arrays)
    if histories is not None:
        with open(os.path.join(OUT, f"histories{suffix}.json"), "w") as f:
            json.dump(histories, f)


def run_single_and_distributed(scopes):
    """One device first, then each `{name: context factory}` in turn."""
    reference = small_cnn()
    weights = reference.get_weights()
    arrays = {f"single/{k}": v for k, v in kernels(reference).items()}
    histories = {
        "parameters": sum(int(np.prod(v.shape)) for v in reference.trainable_variables),
        "single": monitored_fit(reference, weights)[0],
    }
    for name, scope in scopes.items():
        with scope():
            model = small_cnn()
            arrays.update({f"{name}/{k}": v for k, v in kernels(model).items()})
            arrays.update({f"{name}/{k}": v for k, v in big_kernels().items()})
            histories[name], monitor = monitored_fit(model, weights)
            if BACKEND == "jax":
                # How the c2 kernel and the monitor's sign state for it are laid out.
                index = [v.path for v in model.trainable_variables].index("c2/kernel")
                histories[name]["shardings"] = [
                    str(model.get_layer("c2").kernel.value.sharding.spec),
                    str(monitor._wrapper.state["previous_signs"][index].value.sharding.spec),
                ]
    save("", arrays, histories)


def jax_main():
    devices = keras.distribution.list_devices()
    assert len(devices) == 4, devices
    mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["c[23]/kernel"] = (None, None, None, "model")
    run_single_and_distributed(
        {
            "data_parallel": keras.distribution.DataParallel(devices=devices).scope,
            "model_parallel": keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch").scope,
        }
    )


def tensorflow_main():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    run_single_and_distributed({"mirrored": strategy.scope})


def tracked_torch_loop(model, x, y, ddp, steps=4):
    """SGD steps in a PyTorch loop (DDP or not), measured by a GradientSignTracker."""
    import torch

    network = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(model.trainable_variables)
    tracker = kc.GradientSignTracker(model.trainable_variables, per_layer=True)
    for _ in range(steps):
        for v in model.trainable_variables:
            v.value.grad = None
        loss_fn(torch.as_tensor(y), network(torch.as_tensor(x))).backward()
        grads = [v.value.grad for v in model.trainable_variables]  # averaged over ranks by DDP
        tracker.update(grads)
        with torch.no_grad():
            optimizer.apply(grads, model.trainable_variables)
    return tracker.result()


def torch_main():
    """One rank of a 2-process gloo DistributedDataParallel run (CPU)."""
    import torch
    import torch.distributed as dist

    rank, world, port = map(int, sys.argv[3:6])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = small_cnn()
        arrays = {f"rank{rank}/{k}": v for k, v in kernels(model).items()}
        arrays.update({f"rank{rank}/{k}": v for k, v in big_kernels().items()})
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        share = len(X) // world
        x, y = X[rank * share : (rank + 1) * share], Y[rank * share : (rank + 1) * share]
        loss_fn(torch.as_tensor(y), ddp(torch.as_tensor(x))).backward()
        arrays.update({f"rank{rank}/grad/{i}": p.grad.numpy() for i, p in enumerate(model.parameters())})
        if rank == 0:
            # The same model on one process and the whole batch.
            single = small_cnn()
            loss_fn(torch.as_tensor(Y), single(torch.as_tensor(X))).backward()
            arrays.update({f"single/grad/{i}": p.grad.numpy() for i, p in enumerate(single.parameters())})
        # GradientSignTracker in a DDP training loop measures the averaged
        # gradient: the same values as one process on the whole batch.
        histories = {f"rank{rank}": tracked_torch_loop(small_cnn(), x, y, ddp=True)}
        if rank == 0:
            histories["single"] = tracked_torch_loop(small_cnn(), X, Y, ddp=False)
        save(f"_rank{rank}", arrays, histories)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    {"jax": jax_main, "tensorflow": tensorflow_main, "torch": torch_main}[BACKEND]()
