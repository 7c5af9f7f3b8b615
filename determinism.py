"""Same seed, same device, same numbers: where each backend can promise it, and how.

- TensorFlow on the CPU: `tf.config.experimental.enable_op_determinism()`.
- TensorFlow on a GPU: with determinism on, TensorFlow raises UnimplementedError for an op that
  has no deterministic GPU kernel. Every op this network uses should have one in TensorFlow
  >= 2.8 (convolutions and their transposes through cuDNN's deterministic algorithms, sparse
  softmax cross-entropy since 2.8), but no TF GPU run has checked it here, so 'auto' leaves it off
  there and says so; 'true' turns it on, and an UnimplementedError then stops the run with advice.
- JAX on the CPU: deterministic as it is. JAX on a GPU: XLA's --xla_gpu_deterministic_ops=true,
  which must be in XLA_FLAGS before JAX starts its backend, so `prepare` runs first in model.py.
"""
import os

import keras

CHOICES = ("auto", "true", "false")
JAX_FLAG = "--xla_gpu_deterministic_ops=true"


def _no_kernel_errors():
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return (tf.errors.UnimplementedError,)
    return ()


NO_KERNEL_ERRORS = _no_kernel_errors()


def prepare(choice):
    """Before any JAX computation: put XLA's determinism flag into XLA_FLAGS (GPU only; the CPU
    ignores it)."""
    if keras.backend.backend() == "jax" and choice != "false":
        flags = os.environ.get("XLA_FLAGS", "")
        if JAX_FLAG not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {JAX_FLAG}".strip()


def apply(choice, seed):
    """Seed every generator and turn on op determinism where `choice` asks and the backend can;
    returns a line saying what holds."""
    keras.utils.set_random_seed(seed)
    backend = keras.backend.backend()
    if backend == "jax":
        on = choice != "false" and JAX_FLAG in os.environ.get("XLA_FLAGS", "")
        return "deterministic (XLA deterministic ops)" if on else "not deterministic on a GPU (--deterministic false)"
    if backend != "tensorflow":
        return f"determinism not handled for the {backend} backend"
    import tensorflow as tf
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if choice == "true" or (choice == "auto" and not gpu):
        tf.config.experimental.enable_op_determinism()
        return "deterministic (TensorFlow op determinism)"
    if choice == "auto":
        return "not deterministic: TensorFlow op determinism is unverified on GPUs here (--deterministic true turns it on)"
    return "not deterministic (--deterministic false)"
