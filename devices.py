"""Several devices: data parallel training and prediction that compute what one device computes.

Under MirroredStrategy each replica sees its share of the global batch, and Keras sums the replicas'
gradients after scaling each replica's loss by 1 / replicas. A statistic of the batch (batch-norm
moments, the whole-batch RMSE of the reconstruction loss) must then be taken over the global batch
by summing across replicas, or 2 devices would train another network than 1 at the same global
batch. Under JAX, keras.distribution's programs see the global batch already (one program, XLA
splits it), and on one device there is nothing to sum: `replicas_in_step()` is 1 and nothing here
changes a number.

The CPU can stand in for several devices (CPU_DEVICES=N, `split_cpu`): TensorFlow's logical devices,
or XLA's host devices under JAX. That checks the arithmetic of data parallelism without GPUs; it is
no faster than one device.
"""
import contextlib
import os

import keras


def _strategy():
    """The tf.distribute strategy in force inside a replica's step, or None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_strategy()


def replicas_in_step():
    """How many replicas share the step being traced (1 outside a MirroredStrategy's replica context)."""
    strategy = _strategy()
    return strategy.num_replicas_in_sync if strategy is not None else 1


def sum_over_replicas(value):
    """value summed over the replicas (differentiable: its gradient is summed back the same way)."""
    if replicas_in_step() == 1:
        return value
    import tensorflow as tf
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def replicas_of(net):
    """The devices a Keras model computes on together: its MirroredStrategy's replicas under
    TensorFlow, the devices of the DataParallel in force under JAX, else 1."""
    if keras.backend.backend() == "tensorflow":
        return net.distribute_strategy.num_replicas_in_sync
    dist = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    return dist.device_mesh.devices.size if isinstance(dist, keras.distribution.DataParallel) else 1


CPU_DEVICES = "CPU_DEVICES"
XLA_HOST_DEVICES = "--xla_force_host_platform_device_count"


class DeviceError(ValueError):
    """Devices that cannot be set up as asked; the scripts' main turns it into one message."""


def split_cpu():
    """CPU_DEVICES=N (N >= 2) in the environment: the CPU as N devices. Call before the backend
    starts (before any TensorFlow op, before JAX lists its devices). Returns N, or 1."""
    text = os.environ.get(CPU_DEVICES, "1").strip()
    if not text.isdigit() or int(text) < 1:
        raise DeviceError(f"{CPU_DEVICES} must be a whole number of devices (1 or more), got {text!r}")
    n = int(text)
    if n < 2:
        return 1
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError as e:  # TensorFlow started already (another script's process, a test)
            if len(tf.config.list_logical_devices("CPU")) != n:
                raise DeviceError(f"{CPU_DEVICES}={n}: TensorFlow's devices are set already ({e})") from None
    elif keras.backend.backend() == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if XLA_HOST_DEVICES not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {XLA_HOST_DEVICES}={n}".strip()
    return n


def tf_devices():
    """The devices a TensorFlow run trains on data parallel: every GPU where there are two or more,
    else the CPU's logical devices where split_cpu made two or more, else none (one device)."""
    import tensorflow as tf
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) >= 2:
        return [d.name for d in gpus]
    cpus = tf.config.list_logical_devices("CPU")
    return [d.name for d in cpus] if len(cpus) >= 2 and not gpus else []


def distribution_scope():
    """Several devices: data parallel. TensorFlow: tf.distribute.MirroredStrategy over tf_devices(),
    as its scope. JAX: keras.distribution.DataParallel over the devices of the default backend
    (GPUs, or the CPU's virtual devices), set for the whole process, not the block: the model is
    built or loaded inside the block, but trained (fastpath.fit, sharded over the same mesh) after it."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        devices = tf_devices()
        if not devices:
            return contextlib.nullcontext()
        import tensorflow as tf
        return tf.distribute.MirroredStrategy(devices).scope()
    if backend == "jax" and keras.distribution.get_device_count() >= 2:  # the default backend's devices
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    return contextlib.nullcontext()


def describe(net):
    """'1 device', or the strategy and the devices a model trains and predicts on."""
    if keras.backend.backend() == "tensorflow" and replicas_of(net) > 1:
        names = net.distribute_strategy.extended.worker_devices
        return f"MirroredStrategy over {len(names)} devices ({', '.join(n.split('device:')[-1] for n in names)})"
    dist = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if dist is not None:
        return f"{type(dist).__name__} over {dist.device_mesh.devices.size} devices"
    return "1 device"

