"""A sweep's table, laid out like the paper's (rows: classes, OA, AA, kappa, leak-free OA; columns:
methods; mean ± std over seeds), from its runs' metrics.json; written and read as table.md, table.csv
and table.json here only."""
import csv
import os
import shlex

import rundir
from fileio import replacing, write_json, write_text
from metrics import aggregate_metrics
from report import pm
from sweeps import METHODS, SweepError, read_metrics

# The paper's published OA (%) per scene, keyed by the patch file's `dataset` attribute.
PAPER_OA = {"houston2013": 93.08, "houston2018": 84.59, "berlin": 73.21}
PAPER_PROTOCOL = "the authors' protocol: checkpoint selected on the test set"


def build_table(runs, methods, seeds, info, data, data_sha, overrides, settings):
    """table.json's content: per method aggregate_metrics over its seeds' metrics.json (one call per
    method), and the paper-like rows; accuracies as fractions."""
    aggs = {}
    for method in methods:
        mine = [r for r in runs if r.method == method]
        ms = [read_metrics(r.path) for r in mine]
        missing = [r.path for r, m in zip(mine, ms) if m is None]
        if missing:
            raise SweepError(f"no metrics.json in {', '.join(missing)}")
        try:
            aggs[method] = aggregate_metrics(ms, [r.path for r in mine])
        except ValueError as e:
            raise SweepError(f"{method}: {e}") from None
    first = aggs[methods[0]]
    synthetic = any(a["synthetic"] for a in aggs.values()) or info["synthetic"]
    names = [c["name"] for c in first["per_class"]]
    for method, agg in aggs.items():
        if [c["name"] for c in agg["per_class"]] != names or agg["n_test"] != first["n_test"]:
            raise SweepError(f"{method}'s runs were scored on other classes or test pixels than {methods[0]}'s")
    cell = lambda s: {k: s[k] for k in ("mean", "std", "n")}  # noqa: E731
    rows = [dict(row=f"{i + 1} {name}", kind="class", unit="%",
                 values={m: cell(aggs[m]["per_class"][i]["producer_accuracy"]) for m in methods})
            for i, name in enumerate(names)]
    rows += [dict(row=k, kind="overall", unit="%" if k != "kappa" else "fraction",
                  values={m: cell(aggs[m][k]) for m in methods}) for k in ("OA", "AA", "kappa")]
    rows.append(dict(row="leak-free OA", kind="leak-free", unit="%",
                     values={m: cell(aggs[m]["leak_free"]["OA"]) for m in methods}))
    paper = PAPER_OA.get(info["dataset"])
    network = {k: text for k, (text, _) in overrides.items()}
    select = overrides["select"][1] if "select" in overrides else settings["select"]
    title = (f"{first['dataset_label']}: per-class accuracy, OA, AA and kappa of {len(methods)} method"
             f"{'s' if len(methods) > 1 else ''} over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
    if synthetic and "SYNTHETIC" not in title:
        title = f"SYNTHETIC data: {title}"
    return dict(
        title=title, dataset=info["dataset"], dataset_label=first["dataset_label"], synthetic=synthetic,
        data=os.path.basename(data), data_path=os.path.abspath(data), data_sha256=data_sha,
        normalisation=first["normalisation"], split=first["split"], n_test=first["n_test"],
        seeds=list(seeds), n_seeds=len(seeds),
        std="sample standard deviation over seeds (ddof=1); null for a single seed",
        units="accuracies as fractions (0..1), kappa as a fraction",
        methods=[dict(method=m, title=METHODS[m]["title"], kind=METHODS[m]["kind"], protocol=aggs[m]["protocol"],
                      model_flags={k: v for k, v in METHODS[m].get("flags", {}).items()},
                      training_precision=aggs[m]["training_precision"],
                      runs=aggs[m]["runs"], n_runs=aggs[m]["n_runs"]) for m in methods],
        network_settings=network, network_select=select,
        paper=dict(dataset=info["dataset"], OA_percent=paper, protocol=PAPER_PROTOCOL,
                   note="published by Pande & Banerjee 2023 with the checkpoint chosen on the test set; "
                        "for context, not a like-for-like comparison unless the runs used --select authors"),
        rows=rows, aggregates=aggs, written=rundir.now())


def cell_text(s, unit):
    return pm(s, kappa=unit == "fraction")


def table_markdown(t):
    methods = [m["method"] for m in t["methods"]]
    paper = t["paper"]
    paper_line = (f"the paper's published OA on {paper['dataset']}: **{paper['OA_percent']:.2f} %**, "
                  f"{paper['protocol']} (optimistic; for context only)" if paper["OA_percent"] is not None else
                  f"the paper publishes no OA for '{paper['dataset']}' (it does for "
                  f"{', '.join(f'{k} {v:.2f} %' for k, v in PAPER_OA.items())}, {paper['protocol']})")
    protocols = {}
    for m in t["methods"]:
        protocols.setdefault(m["protocol"], []).append(m["method"])
    precisions = {}  # precision auto chooses by each run's machine: a table says what its runs trained in
    for m in t["methods"]:
        if m["kind"] == "network":
            precisions.setdefault(", ".join(m.get("training_precision", ["n/a"])), []).append(m["method"])
    passed = " ".join(f"--{k} {shlex.quote(v)}" for k, v in t["network_settings"].items()) or "none (model.py's defaults)"
    lines = [f"# {t['title']}", "",
             f"- data: {t['data']} (`{t['data_path']}`), sha256 {t['data_sha256']}",
             f"- normalisation: {t['normalisation']}",
             f"- split: {'; '.join(t['split'])}; {t['n_test']} test pixels",
             *[f"- protocol of {', '.join(ms)}: {p}" for p, ms in protocols.items()],
             f"- seeds: {t['n_seeds']} ({', '.join(map(str, t['seeds']))}); each cell is the mean ± sample "
             f"standard deviation (ddof=1) over the seeds; accuracies in %, kappa as a fraction",
             f"- network settings passed to model.py: {passed}",
             *[f"- {', '.join(ms)} trained in: {p}" for p, ms in precisions.items()],
             f"- {paper_line}", "",
             "Methods: " + "; ".join(f"`{m['method']}`: {m['title']}" for m in t["methods"]) + ".", "",
             "| Class | " + " | ".join(methods) + " |", "|:---|" + "---:|" * len(methods)]
    for row in t["rows"]:
        label = {"OA": "**OA (%)**", "AA": "**AA (%)**", "kappa": "**Kappa**",
                 "leak-free OA": "Leak-free OA (%)"}.get(row["row"], row["row"])
        lines.append(f"| {label} | " + " | ".join(cell_text(row["values"][m], row["unit"]) for m in methods) + " |")
    if paper["OA_percent"] is not None:
        beside = "network" if "network" in methods else methods[0]  # the paper's figure is the full network's
        lines.append(f"| Published OA (%), {paper['protocol']} | " +
                     " | ".join(f"{paper['OA_percent']:.2f}" if m == beside else "" for m in methods) + " |")
    lines += ["", f"Leak-free OA: OA on the {t['aggregates'][methods[0]]['leak_free']['definition']}.", ""]
    return "\n".join(lines)


def write_table(out, t):
    """table.md, table.csv (percent, 4 decimals; kappa a fraction) and table.json; returns the paths."""
    paths = [os.path.join(out, f"table.{ext}") for ext in ("md", "csv", "json")]
    write_text(paths[0], table_markdown(t))
    methods = [m["method"] for m in t["methods"]]
    with replacing(paths[1]) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "unit", *[f"{m} {s}" for m in methods for s in ("mean", "std")]])
        for row in t["rows"]:
            scale = 100 if row["unit"] == "%" else 1
            w.writerow([row["row"], row["unit"], *[
                "" if row["values"][m][s] is None or row["values"][m][s] != row["values"][m][s]
                else f"{scale * row['values'][m][s]:.4f}" for m in methods for s in ("mean", "std")]])
    write_json(paths[2], t)
    return paths
