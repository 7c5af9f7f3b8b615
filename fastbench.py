"""The JAX fast path (fastpath.py) against Keras' fit, timed side by side: benchmark.py --fastpath.
Each side runs in its own JAX process; the figures are epochs/s, patches/s, scene pixels/s and peak
device memory."""
import os
import time

import keras
import numpy as np

import hardware
import jobtimes
import network
import training
from patchfile import PatchFile


def one_side(args, config):
    """One side of benchmark.py --fastpath, in this JAX process: 'fit' (Keras' fit on RotatedPatches; the scene
    cut on the host, network.py's loop), or fastpath.fit and the scene cut on the device, its
    batches in a host 'loop' of jitted steps (fastpath's choice on a CPU) or one device 'scan' per
    epoch (its choice on a GPU). The first epoch and the first prediction pass trace and compile;
    the figures are of the rest. config: model.py's settings of the network timed (benchmark.py's mode)."""
    import jax

    import fastpath
    side = args.one_fastpath
    with PatchFile(args.data) as pf:
        info, train, (h, w) = pf.info(), pf.load("train"), pf.shape
        config = dict(config)
        if args.fast_filters:
            config.update(filters=args.fast_filters, fusion_units=min(config["fusion_units"], args.fast_filters))
        keras.utils.set_random_seed(0)
        net = network.build_model(**network.architecture(config, info))
        training.compile_model(net, config)
        seconds = []

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                float(logs["loss"])  # the epoch's work is done
                seconds.append(time.perf_counter() - self.started)

        epochs = 1 + args.fast_epochs
        if side == "fit":
            net.fit(training.RotatedPatches(train, args.batch_size, 0), epochs=epochs, callbacks=[Clock()],
                    shuffle=False, verbose=0)
        else:
            fastpath.fit(net, train, config, 0, epochs, [Clock()], 0, verbose=0, scan=side == "scan")
        clf = network.classifier(net)
        pixels = min(args.fast_pixels or h * w, h * w)

        def predict_host():
            done = 0
            for rows, _, x in pf.scene_batches(args.infer_batch):
                network.predict_labels(clf, x["hsi"], x["aux"], args.infer_batch)
                done += len(rows)
                if done >= pixels:
                    return

        def predict_device():  # the scene read and sent to the device included
            pixel = np.arange(pixels)
            scene = {m: pf.f["scene"][m] for m in ("hsi", "aux")}
            fastpath.predict_pixels(clf, scene, np.stack([pixel // w, pixel % w], 1), pf.patch_size, args.infer_batch,
                                    scan=side == "scan")

        predict = predict_host if side == "fit" else predict_device
        predict()  # trace and compile
        start = time.perf_counter()
        predict()
        predict_seconds = time.perf_counter() - start
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    timed = seconds[1:] or seconds
    jobtimes.print_result(dict(
        side=side, platform=device.platform, device_kind=device.device_kind, train_patches=4 * len(train["label"]),
        first_epoch=seconds[0], epoch_seconds=sum(timed) / len(timed), pixels=pixels,
        predict_pixels_per_s=pixels / predict_seconds, peak_bytes=stats.get("peak_bytes_in_use"),
        filters=config["filters"]))


def compare(args, child):
    """benchmark.py --fastpath: Keras' fit against fastpath.fit (host loop and device scan) under JAX, each side
    in its own process (so that each has its own peak device memory), best of --rounds: epochs/s,
    training patches/s, and scene pixels/s predicted with patches cut on the host (network.py)
    against on the device. child: the command that runs one side (benchmark.py --one-fastpath)."""
    if not args.data:
        raise ValueError("--fastpath needs --data")
    best = {}
    for _ in range(args.rounds):
        for side in ("fit", "loop", "scan"):
            cmd = [*child, "--one-fastpath", side, "--data", args.data,
                   "--batch-size", str(args.batch_size), "--infer-batch", str(args.infer_batch),
                   "--fast-epochs", str(args.fast_epochs), "--fast-pixels", str(args.fast_pixels),
                   "--fast-filters", str(args.fast_filters)]
            r = jobtimes.child_result(cmd, {**os.environ, "KERAS_BACKEND": "jax"}, f"--fastpath ({side})")
            old = best.get(side, r)
            best[side] = {**r, "epoch_seconds": min(r["epoch_seconds"], old["epoch_seconds"]),
                          "predict_pixels_per_s": max(r["predict_pixels_per_s"], old["predict_pixels_per_s"])}
    fit = best["fit"]
    if fit["platform"] == "cpu":
        where = f"CPU ({hardware.describe()})"
    else:
        where = f"{fit['platform'].upper()} ({fit['device_kind']})"
    print(f"fast path under JAX on {where}: {args.data}, {fit['train_patches']} training pairs, batch "
          f"{args.batch_size}, filters {fit['filters']}; {args.fast_epochs} timed epochs after a compiling one; "
          f"{fit['pixels']} scene pixels predicted, batch {args.infer_batch}; best of {args.rounds} rounds")

    def memory(r):
        return "n/a (the backend reports none)" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2 ** 30:.2f} GiB"

    names = {"fit": ("Keras fit", "host"), "loop": ("fastpath loop", "device"), "scan": ("fastpath scan", "device")}
    for side, (name, cut) in names.items():
        r = best[side]
        print(f"  {name:13s} train {1 / r['epoch_seconds']:7.2f} epochs/s "
              f"({r['train_patches'] / r['epoch_seconds']:8.0f} patches/s; first epoch {r['first_epoch']:.1f} s)   predict, patches cut on the {cut:6s} "
              f"{r['predict_pixels_per_s']:8.0f} px/s   peak device memory {memory(r)}")
    for side in ("loop", "scan"):
        fast = best[side]
        print(f"  fastpath {side} / Keras fit on {where}: train x{fit['epoch_seconds'] / fast['epoch_seconds']:.2f}, "
              f"predict x{fast['predict_pixels_per_s'] / fit['predict_pixels_per_s']:.2f}")
    print(f"  (fastpath chooses the {'loop' if fit['platform'] == 'cpu' else 'scan'} on this device)")
