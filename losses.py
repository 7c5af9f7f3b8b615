"""Losses of the joint objective: cross-entropy (from Keras) + lambda1 RMSE + lambda2 RMSE."""
import keras
from keras import ops


@keras.saving.register_keras_serializable("coupled_self_looping")
class BatchRMSE(keras.losses.Loss):
    """Root mean squared error over the whole batch: sqrt(mean of all squared errors).

    This is the paper's reconstruction loss. It is not a mean of per-patch RMSEs, so `call` returns
    one scalar, which Keras' reduction passes through unchanged. Under several replicas each one
    takes the root of its own share of the batch.
    """

    def __init__(self, name="batch_rmse", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        return ops.sqrt(ops.mean(ops.square(y_pred - y_true)))
