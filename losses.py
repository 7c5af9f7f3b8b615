"""Losses of the joint objective: cross-entropy (from Keras) + lambda1 RMSE + lambda2 RMSE."""
import keras
from keras import ops

import devices


@keras.saving.register_keras_serializable("coupled_self_looping")
class BatchRMSE(keras.losses.Loss):
    """Root mean squared error over the whole batch: sqrt(mean of all squared errors).

    This is the paper's reconstruction loss. It is not a mean of per-patch RMSEs, so `call` returns
    one scalar, which Keras' reduction passes through unchanged, unscaled. Under several TF
    replicas the squares are summed over all of them (devices.py), so each replica returns the
    global batch's RMSE, divided by the replica count as Keras divides the losses it reduces itself.
    """

    def __init__(self, name="batch_rmse", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        n = devices.replicas_in_step()
        if n == 1:
            return ops.sqrt(ops.mean(ops.square(y_pred - y_true)))
        squares = devices.sum_over_replicas(ops.sum(ops.square(ops.cast(y_pred - y_true, "float32"))))
        size = devices.sum_over_replicas(ops.cast(ops.size(y_pred), "float32"))
        return ops.cast(ops.sqrt(squares / size) / n, y_pred.dtype)
