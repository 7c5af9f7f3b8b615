"""Moving averages that warm up: the weight average kept by the optimizer (model.py's `ema`) and the
batch-norm moving statistics (layers.StreamBatchNorm) both decay by

    decay_t = min(decay, (1 + t) / (10 + t))      t = the number of updates made before this one

the rule of TensorFlow's `tf.train.ExponentialMovingAverage(decay, num_updates=t)`. Early on the
average spans only the last few steps (about a tenth of the run so far), so a short run does not
drag its initial weights or statistics along: a fixed decay of 0.995 over 177 steps keeps 41 % of
the initial weights; with the warm-up the initial weights' share after T steps is under 9!/T^9.
The fixed decay is reached after about 9 / (1 - decay) updates (1,800 for 0.995): a long run
averages as before. Written with keras.ops only, so it runs under every backend.
"""
import keras
from keras import ops

PACKAGE = "coupled_self_looping"


def warmup_decay(decay, updates):
    """min(decay, (1 + t) / (10 + t)) for t = `updates` (a float32 tensor, any shape)."""
    return ops.minimum(ops.cast(decay, "float32"), (1.0 + updates) / (10.0 + updates))


@keras.saving.register_keras_serializable(PACKAGE)
class AveragedNadam(keras.optimizers.Nadam):
    """Keras' Nadam whose weight average (use_ema) decays by warmup_decay(ema_momentum, t) at step t
    when ema_warmup is on, else by the fixed ema_momentum as Keras' own. As in Keras, the first
    step copies the weights into the average (its initial zeros are never mixed in)."""

    def __init__(self, *args, ema_warmup=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_warmup = ema_warmup

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.ema_warmup:
            return super()._update_model_variables_moving_average(trainable_variables)
        t = ops.cast(self.iterations, "float32")  # updates made before this one (Keras counts after)
        decay = ops.where(ops.equal(t, 0.0), 0.0, warmup_decay(self.ema_momentum, t))
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = ops.cast(decay, var.dtype)
                average.assign(ops.add(ops.multiply(m, average), ops.multiply(ops.subtract(1, m), var)))

    def get_config(self):
        return {**super().get_config(), "ema_warmup": self.ema_warmup}
