"""The split rules, written once: the training / (validation) / test pixels of a scene from the maps
or index arrays it comes with, or drawn from its one ground truth (pixel by pixel, or in whole
spatial blocks with a buffer: split_blocks), and the checks that the maps and modalities agree.
Every draw is stratified by class and seeded.

It reads nothing: datasets.py reads the scene, readers.py checks what was read; the buffer's
distances are patchfile.chebyshev_distance, the leakage report's.
"""
import numpy as np

from patchfile import chebyshev_distance
from readers import DataError, as_coords, as_label_map, warn


def make_splits(train, test, val_fraction, seed):
    """{split: (coords (N, 2), labels (N,) 0..C-1)}, pixels in row-major order. The val split
    takes round(f * n_c) pixels of each class c from training (at least 1 when n_c >= 2, never
    all of them), drawn with numpy's default_rng(seed)."""
    splits = {}
    for name, m in (("train", train), ("test", test)):
        coords = np.argwhere(m > 0).astype(np.int32)
        splits[name] = (coords, (m[coords[:, 0], coords[:, 1]] - 1).astype(np.int32))
    if val_fraction > 0:
        coords, labels = splits["train"]
        is_val = draw_per_class(labels, lambda c, n: min(max(int(round(val_fraction * n)), 1), n - 1),
                                np.random.default_rng(seed))
        splits["train"] = (coords[~is_val], labels[~is_val])
        splits["val"] = (coords[is_val], labels[is_val])
    return splits



def maps_from_index(gt, gt_where, train, test):
    """Train and test maps from the whole ground truth and two index arrays ((array, where) each)."""
    maps, sets = [], []
    for arr, where in (train, test):
        coords = as_coords(arr, where, gt.shape)
        labels = gt[coords[:, 0], coords[:, 1]]
        if (labels == 0).any():
            r, c = coords[labels == 0][0]
            raise DataError(f"{where}: {int((labels == 0).sum())} of its {len(coords)} pixels are unlabelled in "
                            f"{gt_where} (shape {gt.shape}), the first (row {r}, col {c}); indices are 0-based (row, col)")
        m = np.zeros_like(gt)
        m[coords[:, 0], coords[:, 1]] = labels
        maps.append(m)
        sets.append(coords)
    shared = (maps[0] > 0) & (maps[1] > 0)
    if shared.any():
        r, c = np.argwhere(shared)[0]
        raise DataError(f"{train[1]} and {test[1]}: the training and test indices share {int(shared.sum())} "
                        f"pixel(s), the first (row {r}, col {c}); a pixel may be in one of them only")
    return maps


def split_ground_truth(gt, where, class_names, per_class=None, fraction=None, seed=0):
    """Train and test maps drawn from one ground truth: per_class pixels of each class (or
    round(fraction * n), at least 1) for training, the rest for testing; stratified, seeded with
    numpy's default_rng((seed, 1)). Refuses a split that leaves a class without test pixels."""
    def count(c, n):
        k = per_class if per_class else max(1, int(round(fraction * n)))
        if k >= n:
            name = class_names[c - 1] if class_names and c <= len(class_names) else f"class {c}"
            rule = f"--train-per-class {per_class}" if per_class else f"--train-fraction {fraction}"
            raise DataError(f"{where}: class {c} ({name}) has {n} labelled pixel(s): {rule} takes {k} for "
                            "training and leaves none for testing; ask for fewer")
        return k

    labelled = np.flatnonzero(gt > 0)  # row-major
    chosen = draw_per_class(gt.flat[labelled], count, np.random.default_rng([seed, 1]))
    train = np.zeros_like(gt)
    train.flat[labelled[chosen]] = gt.flat[labelled[chosen]]
    return train, np.where(train > 0, 0, gt)


def draw_per_class(labels, count, rng):
    """Boolean mask over labels: count(c, n) of the n pixels of each class c, drawn without
    replacement, classes in increasing order."""
    chosen = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        chosen[rng.choice(idx, count(c, len(idx)), replace=False)] = True
    return chosen


def check_sizes(pieces, height, width):
    """All modalities and maps must cover the same H x W pixels."""
    if any(arr.shape[:2] != (height, width) for arr, _ in pieces):
        listing = "; ".join(f"{where} shape {arr.shape}" for arr, where in pieces)
        raise DataError(f"height/width differ between the inputs: {listing}")


def check_maps(train, test, train_where, test_where):
    """Number of classes C; refuses overlapping or empty maps, warns for classes without training."""
    overlap = (train > 0) & (test > 0)
    if overlap.any():
        r, c = np.argwhere(overlap)[0]
        raise DataError(f"train map {train_where} and test map {test_where} (shape {train.shape}) "
                        f"overlap at {int(overlap.sum())} pixel(s), the first at row {r}, col {c}; "
                        "a pixel may be in one of them only")
    for m, where in ((train, train_where), (test, test_where)):
        if not (m > 0).any():
            raise DataError(f"{where} shape {m.shape}: the map has no labelled pixels")
    n_classes = int(max(train.max(), test.max()))
    in_train, in_test = np.bincount(train.ravel(), minlength=n_classes + 1), np.bincount(test.ravel(), minlength=n_classes + 1)
    untrained = [c for c in range(1, n_classes + 1) if in_test[c] and not in_train[c]]
    if untrained:
        warn(f"class(es) {untrained} appear in the test map {test_where} but not in the training "
             f"map {train_where}: the model cannot learn them")
    missing = [c for c in range(1, n_classes + 1) if not in_test[c] and not in_train[c]]
    if missing:
        warn(f"class(es) {missing} appear in neither map (labels run 1..{n_classes})")
    return n_classes



def split_blocks(gt, where, class_names, block_size, patch_size, per_class=None, fraction=None, seed=0):
    """A spatially disjoint split of one ground truth (H, W) (1..C, 0 unlabelled): the scene is tiled
    into block_size x block_size blocks from its top-left corner (the last row and column of blocks
    may be smaller), and whole blocks go to training or to testing, drawn with numpy's
    default_rng((seed, 2)) and stratified by class as far as the scene allows: a greedy draw that
    aims at per_class training pixels of each class (or round(fraction * n), at least 1), taking
    for the class furthest below its target the best of up to 8 random blocks holding it, and never
    a class's last unassigned block. Training blocks holding more pixels of a class than its target
    give a random `target` of them (the rest is left out). Then a buffer: test pixels at Chebyshev
    distance 2r or less (r = patch_size // 2) of any training pixel are dropped, so that no test
    patch shares a pixel with a training patch.

    Returns (train map, test map, info) with info: block_size, buffer_px, blocks (those holding
    labelled pixels), train_blocks, test_blocks, targets, dropped_test (by the buffer),
    left_out_train (above the target). Refuses a
    block larger than the scene and a draw that leaves a class without training or test pixels."""
    h, w = gt.shape
    b = int(block_size)
    if b < 1:
        raise DataError(f"--block-size must be at least 1, got {b}")
    if b > h or b > w:
        raise DataError(f"{where}: --block-size {b} is larger than the {h} x {w} scene; choose at most {min(h, w)}")
    names = lambda c: class_names[c - 1] if class_names and c <= len(class_names) else f"class {c}"  # noqa: E731
    rule = f"--train-per-class {per_class}" if per_class else f"--train-fraction {fraction}"
    n_classes = int(gt.max())
    cols = -(-w // b)
    rows_idx, cols_idx = np.divmod(np.arange(h * w), w)
    block = (rows_idx // b) * cols + cols_idx // b  # the block of every pixel, row-major
    n_blocks = int(block.max()) + 1
    labels = gt.ravel()
    counts = np.bincount(block * (n_classes + 1) + labels, minlength=n_blocks * (n_classes + 1))
    counts = counts.reshape(n_blocks, n_classes + 1)[:, 1:].astype(np.int64)  # (blocks, C)
    n = counts.sum(0)
    present = n > 0
    target = np.where(present, per_class if per_class else np.maximum(1, np.round((fraction or 0) * n)), 0)
    target = target.astype(np.int64)
    for c in np.flatnonzero(present):
        if target[c] >= n[c]:
            raise DataError(f"{where}: class {c + 1} ({names(c + 1)}) has {n[c]} labelled pixel(s): {rule} takes "
                            f"{target[c]} for training and leaves none for testing; ask for fewer")

    rng = np.random.default_rng([seed, 2])
    weight = np.where(present, 1.0 / np.maximum(target, 1), 0.0)

    def error(x):  # below the target counts fully, above it a quarter (it costs test pixels only)
        return float((weight * (np.maximum(target - x, 0) + 0.25 * np.maximum(x - target, 0))).sum())

    assigned = np.zeros(n_blocks, bool)
    taken = np.zeros(n_classes, np.int64)  # training pixels of each class in the blocks taken
    left = n.copy()  # pixels of each class in blocks not taken
    done = ~present
    while True:
        short = np.where(done, -np.inf, (target - taken) * weight)
        c = int(np.argmax(short))
        if short[c] <= 0:
            break
        holds = counts[:, c] > 0
        # never a block that holds the last unassigned pixels of any class: the test side keeps some
        keeps = ((left[None, :] - counts > 0) | (counts == 0)).all(1)
        candidates = np.flatnonzero(~assigned & holds & keeps)
        if not len(candidates):
            done[c] = True
            continue
        sample = rng.choice(candidates, min(8, len(candidates)), replace=False)
        now = error(taken)
        costs = [error(taken + counts[k]) - now for k in sample]
        best = int(np.argmin(costs))
        if costs[best] >= 0 and taken[c] > 0:
            done[c] = True
            continue
        k = sample[best]
        assigned[k], taken, left = True, taken + counts[k], left - counts[k]

    in_train = assigned[block] & (labels > 0)
    train = np.zeros(h * w, gt.dtype)
    left_out = 0
    for c in np.flatnonzero(present):
        idx = np.flatnonzero(in_train & (labels == c + 1))
        if len(idx) > target[c]:
            left_out += len(idx) - int(target[c])
            idx = rng.choice(idx, int(target[c]), replace=False)
        train[idx] = c + 1
    candidates = np.flatnonzero(~assigned[block] & (labels > 0))
    r = patch_size // 2
    train_coords = np.argwhere(train.reshape(h, w) > 0)
    d = chebyshev_distance((h, w), train_coords, np.stack(np.divmod(candidates, w), 1))
    kept = candidates[d > 2 * r]
    test = np.zeros(h * w, gt.dtype)
    test[kept] = labels[kept]
    train, test = train.reshape(h, w), test.reshape(h, w)
    check = chebyshev_distance((h, w), train_coords, np.argwhere(test > 0))
    if len(check) and check.min() <= 2 * r:  # the buffer, verified as the leakage report measures it
        raise AssertionError(f"blocks split: a test pixel lies {check.min()} px from a training pixel")
    in_train_n = np.bincount(train.ravel(), minlength=n_classes + 1)[1:]
    in_test_n = np.bincount(test.ravel(), minlength=n_classes + 1)[1:]
    for c in np.flatnonzero(present):
        if not in_train_n[c] or not in_test_n[c]:
            lacking = "training" if not in_train_n[c] else "test"
            blocks_of_c = int((counts[:, c] > 0).sum())
            raise DataError(
                f"{where}: the {b} x {b} block draw (seed {seed}, {rule}) leaves class {c + 1} ({names(c + 1)}) "
                f"without {lacking} pixels: its {n[c]} labelled pixel(s) lie in {blocks_of_c} block(s)"
                + (f", and the {2 * r}-pixel buffer around the training pixels drops every test pixel left"
                   if lacking == "test" else "")
                + "; try a smaller --block-size, another --seed or a smaller training share")
    labelled_blocks = counts.sum(1) > 0
    info = dict(block_size=b, buffer_px=2 * r, blocks=int(labelled_blocks.sum()), train_blocks=int(assigned.sum()),
                test_blocks=int((labelled_blocks & ~assigned).sum()), targets=target.tolist(),
                dropped_test=int(len(candidates) - len(kept)), left_out_train=int(left_out))
    return train, test, info


BLOCK_SIZE = 32  # --split blocks' default block side, in pixels


def block_maps(scene, class_names, train_per_class, train_fraction, seed, block_size, patch_size):
    """--split blocks: the spatially disjoint split (splits.split_blocks) of the scene's one ground
    truth, or of the union of the train and test maps (or index arrays) it is distributed with."""
    if "gt" in scene and "train_index" not in scene:
        gt, gt_where = scene["gt"]
        gt, union = as_label_map(gt, gt_where), False
    else:
        if "train" in scene:
            (train, train_where), (test, test_where) = scene["train"], scene["test"]
            train, test = as_label_map(train, train_where), as_label_map(test, test_where)
        else:
            gt, where = scene["gt"]
            train, test = maps_from_index(as_label_map(gt, where), where, scene["train_index"], scene["test_index"])
            train_where, test_where = scene["train_index"][1], scene["test_index"][1]
        if train.shape != test.shape:
            raise DataError(f"height/width differ between the inputs: {train_where} shape {train.shape}; "
                            f"{test_where} shape {test.shape}")
        check_maps(train, test, train_where, test_where)  # no overlap: the union is well defined
        gt, gt_where, union = np.maximum(train, test), f"the union of {train_where} and {test_where}", True
    block_size = BLOCK_SIZE if block_size is None else block_size
    train, test, info = split_blocks(gt, gt_where, class_names, block_size, patch_size, train_per_class,
                                     train_fraction, seed)
    r = patch_size // 2
    rule = (f"{train_per_class} training pixels per class" if train_per_class
            else f"round({train_fraction} x n) training pixels of each class of n (at least 1)")
    text = (f"drawn: spatially disjoint blocks: the scene tiled into {block_size} x {block_size} pixel blocks from "
            f"its top-left corner, whole blocks to training or to testing ({info['train_blocks']} and "
            f"{info['test_blocks']} of the {info['blocks']} holding labelled pixels), stratified by class as far as "
            f"the scene allows, aiming at {rule} (training blocks' pixels above the target left out: {info['left_out_train']}), seed {seed}; "
            f"buffer: test pixels within Chebyshev distance {2 * r} (2r, r = P // 2 = {r}) of a training pixel "
            f"dropped ({info['dropped_test']} of them), so no test patch shares a pixel with a training patch")
    if union:
        text += ("; drawn from the UNION of the train and test maps the scene is distributed with: NOT the paper's "
                 "split, accuracies are not comparable with the paper's")
    attrs = dict(split_method="blocks", block_size=block_size, buffer_px=2 * r, split_from_union=union)
    return train, test, f"{gt_where} (training blocks)", f"{gt_where} (test blocks)", text, attrs
