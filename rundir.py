"""A run directory: everything one training run leaves, written and read here alone.

    config.json     the full configuration, the data file and its sha256, the command of the job that
                    started the run and of every job that resumed it (with its overrides)
    state.json      epochs done, the selected epoch, final.keras's sha256: the commit of an epoch
    history.csv     one row per epoch of this run (never rows of another run)
    final.keras     the last epoch: weights and optimiser state, what --resume continues
    selected.keras  the checkpoint the run's protocol keeps (see PROTOCOLS)
    curves.png, tensorboard/, and evaluate.py's results (metrics*.json and the rest), each naming
    the sha256 of the checkpoint it was computed from (`checkpoint_sha256`)

A new run refuses a directory that holds anything, unless told to overwrite a run directory;
a resumed run refuses a patch file whose sha256 is not the one it was trained on.
"""
import csv
import datetime
import json
import os
import shutil

from fileio import replacing, sha256, write_json

PROTOCOLS = {
    "last": "last epoch (no checkpoint selection)",
    "val": "best validation accuracy (validation pixels carved from the training set)",
    "authors": "best TEST accuracy (the authors' protocol: optimistic, the test set chose the checkpoint)",
}
HELD_OUT = {"val": "val", "authors": "test"}  # the split whose accuracy each protocol monitors
AVERAGED = "weights averaged while training (exponential moving average, ema={ema}{warmed_up})"


class RunError(ValueError):
    """A run directory that cannot be made, read or continued; the message says what to do."""


def monitored(select):
    """The history column a protocol selects its checkpoint by (None for 'last')."""
    return f"{HELD_OUT[select]}_accuracy" if select in HELD_OUT else None


WARMED_UP = ", warmed up: decay min(ema, (1 + t) / (10 + t)) at step t"


def protocol_text(select, config):
    """The protocol `select` as every table states it for a run of `config`, naming averaged weights
    (and their warm-up) when they are what is kept."""
    ema = config.get("ema", 0.0)
    if not ema:
        return PROTOCOLS[select]
    warmed_up = WARMED_UP if config.get("warmup", BEFORE_IT_EXISTED["warmup"]) else ""
    return f"{PROTOCOLS[select]}; {AVERAGED.format(ema=ema, warmed_up=warmed_up)}"


def now():
    return datetime.datetime.now().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- new, overwrite, resume
def prepare_new(run_dir, overwrite=False):
    """Make an empty run directory. A directory holding anything is refused (untouched) unless
    overwrite is set and it is a run directory, which is then emptied."""
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        if not overwrite:
            raise RunError(f"{run_dir} is not empty: continue the run there with --resume {run_dir}, "
                           f"or start it afresh with --overwrite (its files are deleted)")
        if not os.path.isfile(os.path.join(run_dir, "config.json")):
            raise RunError(f"{run_dir} holds files but no config.json, so it is not a run directory: "
                           f"--overwrite only replaces runs; choose another --out")
        shutil.rmtree(run_dir)
    elif os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunError(f"{run_dir} is a file, not a directory; choose another --out")
    os.makedirs(run_dir, exist_ok=True)


def write_config(run_dir, config):
    write_json(os.path.join(run_dir, "config.json"), config)


def read_config(run_dir):
    """A run's config.json (model.py's or baselines.py's)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir}: no such run directory")
    if not os.path.isfile(path):
        raise RunError(f"{run_dir}: no config.json: not a run directory written by model.py or baselines.py")
    with open(path) as f:
        return json.load(f)


def read_state(run_dir):
    """state.json, or {} for a run that has not finished an epoch yet."""
    path = os.path.join(run_dir, "state.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def read_run(run_dir):
    """(config, state) of a run directory, checked for the keys every reader needs."""
    config = read_config(run_dir)
    needed = ("select", "data") + (() if is_baseline(config) else ("architecture",))
    for key in needed:
        if key not in config:
            raise RunError(f"{os.path.join(run_dir, 'config.json')}: key '{key}' missing: not a config "
                           f"written by model.py")
    return config, read_state(run_dir)


def is_baseline(config):
    return "method" in config  # written by baselines.py


def check_data(run_dir, config):
    """The patch file must be the one the run was trained on (its sha256 as recorded)."""
    data = config["data"]
    if not os.path.isfile(data):
        raise RunError(f"{data}: the patch file {run_dir} was trained on is gone; put it back to continue")
    digest = sha256(data)
    if digest != config["data_sha256"]:
        raise RunError(f"{data}: sha256 {digest[:16]}... is not {config['data_sha256'][:16]}..., the file "
                       f"{run_dir} was trained on (prepared again since?); put the original back, or start "
                       f"a new run on this file with another --out")


def resume(run_dir, command, overrides, max_minutes=0.0):
    """(config, state) of a run to continue. Checks the patch file, records this job (command,
    overrides, max_minutes) in config.json, completes an epoch killed before its commit and drops
    history rows after the last committed epoch."""
    config = {**read_config(run_dir), "out": run_dir}  # the directory as named now, wherever we run from
    if not os.path.exists(os.path.join(run_dir, "state.json")) or not os.path.exists(checkpoint_path(run_dir, "final")):
        raise RunError(f"{run_dir}: no state.json / final.keras yet: nothing to resume; start it again with "
                       f"--out {run_dir} --overwrite")
    check_data(run_dir, config)
    state = read_state(run_dir)
    config.update(overrides)
    config["resumes"] = config.get("resumes", []) + [dict(
        command=command, overrides=overrides, max_minutes=max_minutes, started=now(),
        from_epoch=state["epochs_done"])]
    write_config(run_dir, config)
    state = roll_forward(run_dir, config, state)
    truncate_history(os.path.join(run_dir, "history.csv"), state["epochs_done"])
    return config, state


# ----------------------------------------------------------------------------- epochs and checkpoints
def choose_checkpoint(run_dir, config, state, select=None):
    """(select, checkpoint stem, epoch) for a protocol: 'last' is always there (final.keras); another
    selection only if the run itself selected that way while training."""
    run_select = config["select"]
    select = select or run_select
    if select == "last":
        checkpoint, epoch = "final", state.get("epochs_done")
    elif select == run_select:
        checkpoint, epoch = "selected", state.get("selected_epoch")
    else:
        raise RunError(f"{run_dir}: the run selected its checkpoint by '{run_select}', so it has no '{select}' "
                       f"checkpoint; retrain with model.py --select {select} (or evaluate --select last)")
    if not os.path.isfile(checkpoint_path(run_dir, checkpoint)):
        raise RunError(f"{run_dir}: no {checkpoint}.keras: has the training finished (or saved an epoch)?")
    return select, checkpoint, epoch


def result_suffix(config, select, precision, data=None):
    """'' for the run's own checkpoint selection, precision and data file, else '-last', '-mixed',
    '-last-float32', '-<data file's stem>'...: numbers made another way never overwrite the run's own."""
    parts = [select] if select != config["select"] else []
    if data and os.path.abspath(data) != os.path.abspath(config["data"]):
        parts.append(os.path.splitext(os.path.basename(data))[0])
    if precision != training_precision(config):
        parts.append(precision)
    return "".join(f"-{part}" for part in parts)


def training_conv_algorithm(config):
    """direct or winograd: how the run's convolutions computed while it trained (conv_algorithm
    'auto' is chosen on its machine when it starts); a run from before the choice existed, direct."""
    return config.get("conv_algorithm_used") or BEFORE_IT_EXISTED["conv_algorithm"]


def training_precision(config):
    """float32 or mixed: what the run trained in. precision 'auto' is chosen on the run's machine when
    it starts and kept as precision_used, so a resumed run goes on in it wherever it resumes."""
    return config.get("precision_used") or config.get("precision", "float32")


def checkpoint_path(run_dir, checkpoint):
    """checkpoint: 'final' or 'selected'."""
    return os.path.join(run_dir, f"{checkpoint}.keras")


def checkpoint_sha256(run_dir, checkpoint):
    """The identity of a checkpoint: what a cached metrics file must name to be reused."""
    return sha256(checkpoint_path(run_dir, checkpoint))


def save_checkpoint(net, run_dir, checkpoint="final"):
    with replacing(checkpoint_path(run_dir, checkpoint)) as tmp:  # the temporary name keeps .keras
        net.save(tmp)


def end_epoch(run_dir, net, state, epoch, logs, monitor):
    """After each epoch, in this order: its row of history.csv, final.keras, then commit_epoch. A run
    killed part-way leaves at most a stray history row (dropped on resuming) or a final.keras one
    epoch ahead of state.json (rolled forward on resuming)."""
    append_history(os.path.join(run_dir, "history.csv"), epoch, logs)
    save_checkpoint(net, run_dir, "final")
    commit_epoch(run_dir, state, epoch + 1, logs[monitor] if monitor else None)


def commit_epoch(run_dir, state, epoch, score):
    """Once final.keras holds `epoch`: selected.keras (a copy of it) when the monitored score beats
    the best so far, then state.json, the commit, with final.keras's digest."""
    final = checkpoint_path(run_dir, "final")
    if score is not None and score > state.get("best", -1.0):
        with replacing(checkpoint_path(run_dir, "selected")) as tmp:
            shutil.copyfile(final, tmp)
        state.update(best=score, selected_epoch=epoch)
    state.update(epochs_done=epoch, final_sha256=sha256(final))
    write_state(run_dir, state)


def write_state(run_dir, state):
    write_json(os.path.join(run_dir, "state.json"), state)


def finish(run_dir, state, select):
    """At the end of a job: protocol 'last' keeps the final checkpoint as the selected one."""
    if select == "last" and state.get("epochs_done"):
        with replacing(checkpoint_path(run_dir, "selected")) as tmp:
            shutil.copyfile(checkpoint_path(run_dir, "final"), tmp)
        state["selected_epoch"] = state["epochs_done"]
    write_state(run_dir, state)


def roll_forward(run_dir, config, state):
    """A run killed after saving an epoch's final.keras but before writing its state.json has a
    checkpoint one epoch ahead of its state. That epoch did finish (its history row is written
    first), so its state is completed from that row, selected.keras included."""
    final = checkpoint_path(run_dir, "final")
    if state.get("final_sha256") in (None, sha256(final)):
        return state
    rows = read_history(run_dir)
    done = state["epochs_done"]
    if len(rows) <= done:
        raise RunError(f"{run_dir}: final.keras is newer than state.json, but history.csv has no row for epoch "
                       f"{done + 1}: the run cannot be continued consistently; start it again with --overwrite")
    monitor = monitored(config["select"])
    commit_epoch(run_dir, state, done + 1, float(rows[done][monitor]) if monitor else None)
    print(f"{run_dir}: final.keras was saved for epoch {done + 1} but state.json was not: completed from history.csv")
    return state


# ----------------------------------------------------------------------------- history.csv
def append_history(path, epoch, logs):
    keys = sorted(logs)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["epoch", *keys])
        writer.writerow([epoch, *(float(logs[k]) for k in keys)])


def read_history(run_dir):
    path = os.path.join(run_dir, "history.csv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def truncate_history(path, rows):
    """Drop rows logged after the last saved epoch, so the resumed history has each epoch once."""
    if os.path.exists(path):
        with open(path) as f:
            lines = f.readlines()
        with replacing(path) as tmp, open(tmp, "w") as f:
            f.writelines(lines[:rows + 1])


# ----------------------------------------------------------------------------- settings compared
RUN_ONLY = ("out", "resume", "overwrite", "max_minutes", "data")  # job settings, not the run's


# What a run made before a setting existed did instead (its config.json lacks the key).
BEFORE_IT_EXISTED = {"warmup": False, "spectral_stem": True, "conv_algorithm": "direct"}


def differences(config, wanted):
    """'name: have X, want Y' for every setting in `wanted` that the run's config holds otherwise
    (job-only settings ignored): a sweep never adopts a run made with other settings."""
    have = {**BEFORE_IT_EXISTED, **config}
    return [f"{k}: the run has {have.get(k)!r}, wanted {v!r}" for k, v in sorted(wanted.items())
            if k not in RUN_ONLY and have.get(k) != v]
