"""The report as one self-contained HTML page: every section's numbers as tables and inline SVG,
the per-dialogue view drawn in the browser from the page's embedded JSON by ``report.js``.

Nothing is fetched: the style sheet and the script are read from the package and written into the
page, so it opens from ``file://`` without a network.
"""
from __future__ import annotations

import json
import os
from html import escape

from hotspot_erc.inspect import svg
from hotspot_erc.inspect.gates import verdict_line

SECTIONS = (("summary", "Summary"), ("gates", "Gates (HGF)"), ("routing", "Routing (MoA)"),
            ("alignment", "Alignment (MoA)"), ("graph", "Graph edges"), ("robustness", "Robustness"),
            ("cost", "Cost"), ("dialogues", "Dialogues"))
_HERE = os.path.dirname(os.path.abspath(__file__))


def _asset(name: str) -> str:
    with open(os.path.join(_HERE, name), encoding="utf-8") as fh:
        return fh.read()


def num(v, fmt: str = "{:.3f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def ci(pair, fmt: str = "{:+.3f}") -> str:
    return "" if not pair else f" [{fmt.format(pair[0])}, {fmt.format(pair[1])}]"


def table(headers: list[str] | None, rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers or ())
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<table class="{cls}">{head}<tbody>{body}</tbody></table>'


class Raw(str):
    """A table cell that is already HTML."""


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{escape(text)}</p>' if cls else f"<p>{escape(text)}</p>"


# ----------------------------------------------------------------------------- sections

def summary_html(s: dict) -> str:
    m = s["metrics"]
    facts = [["run folder", s["run_dir"]], ["checkpoint", s["checkpoint"]], ["corpus", s["corpus"]],
             ["split", f"{s['split']}: {s['dialogues']} dialogues, {s['utterances']} utterances "
                       f"({s['labelled']} labelled)"],
             ["modalities", s["modalities"]],
             ["training", f"best epoch {s['best_epoch']} of {s['epochs_run']}"
                          + (f", {s['train_seconds']:.0f} s" if s.get("train_seconds") else "")],
             ["accuracy / weighted F1", f"{m['accuracy']:.4f} / {m['weighted_f1']:.4f}"]]
    changed = s["changed_settings"]
    out = [table(None, facts, "facts")]
    out.append(_p("Model settings that differ from today's defaults: " + (
        ", ".join(f"{k} = {v[1]!r} (default {v[0]!r})" for k, v in changed.items()) or "none") + "."))
    names = s["label_names"]
    out.append('<div class="figs">' + svg.bars(names, {"F1": [m["per_class_f1"][n] for n in names]}, ymax=1.0,
                                               ylabel="per-class F1")
               + svg.heatmap(m["confusion_matrix"], [f"true {n}" for n in names], [f"pred {n}" for n in names],
                             fmt="{:.0f}", label="confusion matrix") + "</div>")
    for w in s["warnings"]:
        out.append(_p(f"warning recorded by training: {w}", "warn"))
    cfg = json.dumps({"model": s["model_config"], "train": s["train_config"]}, indent=1)
    out.append(f"<details><summary>all settings</summary><pre>{escape(cfg)}</pre></details>")
    return "".join(out)


def gates_html(g: dict) -> str:
    if not g["modalities"]:
        return _p(g["note"])
    b = g["bootstrap"]
    out = [_p(f"Gate α of HGF on every frame of the split. Intervals: {int(b['level'] * 100)}% cluster bootstrap "
              f"over {b['resampled']} ({b['replicates']} replicates, seed {b['seed']}). Verdict against "
              f"the hotspot frames: concentrated / inverted when the mean gate differs by at least "
              f"{g['gate_diff_min']} and the interval excludes 0, flat otherwise."),
           '<ul class="verdicts">' + "".join(f"<li>{escape(verdict_line(m, v))}</li>"
                                              for m, v in g["modalities"].items()) + "</ul>"]
    for m, v in g["modalities"].items():
        rows = [["frames × channels", f"{v['frames']} × {v['channels']}"],
                ["mean (std) per frame", f"{num(v['mean'])} ({num(v['std'], '{:.4f}')})"],
                ["5 / 50 / 95th percentile", f"{num(v['p05'])} / {num(v['p50'])} / {num(v['p95'])}"],
                [f"r(gate, {v['intensity_source']})",
                 f"{num(v['correlation']['r'], '{:+.3f}')}{ci(v['correlation']['ci'])}"],
                ["gate inside / outside windows",
                 f"{num(v['windows']['inside'])} / {num(v['windows']['outside'])} "
                 f"(Δ {num(v['windows']['difference'], '{:+.4f}')}{ci(v['windows']['ci'], '{:+.4f}')})"],
                ["share of frames in windows", num(v["window_share"])]]
        if "truth" in v:
            t = v["truth"]
            rows += [["gate inside / outside bursts",
                      f"{num(t['gate']['inside'])} / {num(t['gate']['outside'])} "
                      f"(Δ {num(t['gate']['difference'], '{:+.4f}')}{ci(t['gate']['ci'], '{:+.4f}')})"],
                     ["windows vs bursts: precision / recall",
                      f"{num(t['windows_vs_bursts']['precision'])} / {num(t['windows_vs_bursts']['recall'])}"],
                     ["windows vs evidence bursts: precision / recall",
                      f"{num(t['windows_vs_evidence']['precision'])} / {num(t['windows_vs_evidence']['recall'])}"],
                     ["share of frames in bursts", num(t["burst_share"])]]
        h = v["histogram_all_channels"]
        figs = svg.histogram(h["edges"], h["counts"], "α, every channel of every frame")
        if v["histogram_frame_mean"]:
            hm = v["histogram_frame_mean"]
            figs += svg.histogram(hm["edges"], hm["counts"], "α per frame (mean over channels), zoomed", fmt="{:.4f}")
        out.append(f'<div class="card"><h3>modality {escape(m)}: {escape(v["verdict"] or "undetermined")}</h3>'
                   f'<div class="figs">{figs}</div>{table(None, rows, "facts")}</div>')
    return "".join(out)


def routing_html(r: dict) -> str:
    out = []
    if r["note"]:
        out.append(_p(r["note"], "note"))
    if r["pairs"]:
        out.append(_p(f"Usage: each utterance's gates summed per expert, as shares of each row (utterances in "
                      f"brackets). MI: mutual information in bits between an utterance's top expert and its "
                      f"class, speaker or turn bucket, against the same variable shuffled across utterances "
                      f"({r['shuffles']} shuffles, seed {r['seed']}: mean and 95th percentile); p is the share of "
                      "shuffles at least as informative."))
    for pair, p in r["pairs"].items():
        experts = [f"e{i}" for i in range(p["num_experts"])]
        mi = [[k, num(v["mi_bits"], "{:.4f}"), num(v["shuffled_mean"], "{:.4f}"), num(v["shuffled_p95"], "{:.4f}"),
               num(v["p_value"]), v["items"]] for k, v in p["mi"].items()]
        cls = p["by_class"]
        out.append(f'<div class="card"><h3>pair {escape(pair)} ({p["utterances"]} utterances; usage '
                   + ", ".join(f"{e} {s:.2f}" for e, s in zip(experts, p["usage"])) + ")</h3>"
                   + table(["MI(top expert; …)", "bits", "shuffled mean", "shuffled 95%", "p", "utterances"], mi)
                   + '<div class="figs">'
                   + svg.heatmap(cls["shares"], [f"{n} ({c})" for n, c in zip(r["label_names"], cls["utterances"])],
                                 experts, vmax=1.0, label="usage per class")
                   + svg.heatmap(p["by_speaker"]["shares"], [f"speaker {i} ({c})" for i, c in
                                                             enumerate(p["by_speaker"]["utterances"])], experts,
                                 vmax=1.0, label="usage per speaker")
                   + svg.heatmap(p["by_turn"]["shares"], [f"{n} ({c})" for n, c in
                                                          zip(r["turn_buckets"], p["by_turn"]["utterances"])],
                                 experts, vmax=1.0, label="usage per turn") + "</div></div>")
    lb = r["load_balance"]
    if lb and r["one_expert"]:
        out.append(_p("The load-balancing loss is E·Σ f·P = 1 per pair by construction with one expert "
                      f"({lb['train_lb'][-1]:.2f} summed over the pairs, every epoch), so it is not drawn."))
    elif lb and r["pairs"]:
        figs = svg.lines(lb["epochs"], {"train L_lb": lb["train_lb"]}, ylabel="load-balancing loss")
        if lb["dev_routing_entropy"]:
            figs += svg.lines(lb["epochs"], lb["dev_routing_entropy"], ylabel="dev routing entropy", ymin=0, ymax=1)
        epochs = _p(f"{len(lb['epochs'])} epochs, the first {lb['warmup_epochs']} of them alignment warm-up.")
        out.append(f'<h3>load balance over training</h3>{epochs}<div class="figs">{figs}</div>')
    return "".join(out)


def alignment_html(a: dict) -> str:
    if a["note"]:
        return _p(a["note"], "note")
    out = [_p("Mass: mean attention (over heads, then over queries) of each target hotspot query on a set of "
              "source frames; uniform: the share of the source's frames the set holds; lift = mass / uniform.")]
    rows = []
    for pair, p in a["pairs"].items():
        w = p["windows"]
        row = [pair, w["queries"], num(w["mass"]), num(w["uniform"]), num(w["lift"], "{:.2f}")]
        if a.get("truth"):
            t = p["truth"]
            row += [t["matched"]["queries"], num(t["matched"]["mass"]), num(t["matched"]["uniform"]),
                    num(t["matched"]["lift"], "{:.2f}"), num(t["distractors"]["mass"]),
                    num(t["distractors"]["uniform"]), num(t["distractors"]["lift"], "{:.2f}")]
        rows.append(row)
    headers = ["pair (source→target)", "queries", "mass on windows", "uniform", "lift"]
    if a.get("truth"):
        headers += ["queries on an evidence burst", "mass on matched burst", "uniform", "lift",
                    "mass on distractor bursts", "uniform", "lift"]
    out.append(table(headers, rows))
    series = {"windows": [p["windows"]["lift"] for p in a["pairs"].values()]}
    if a.get("truth"):
        series["matched burst"] = [p["truth"]["matched"]["lift"] for p in a["pairs"].values()]
        series["distractors"] = [p["truth"]["distractors"]["lift"] for p in a["pairs"].values()]
    out.append(svg.bars(list(a["pairs"]), series, ylabel="lift (1 = uniform)"))
    return "".join(out)


def graph_html(g: dict) -> str:
    if g["note"]:
        return _p(g["note"], "note")
    names = [f"{lo}-{hi} turns" if lo != hi else f"{lo} turns" for lo, hi in g["buckets"]]
    out = [_p(f"Each variant removes one family of edges from the graph at inference (weights unchanged) and "
              f"scores the split again. The graph of the split has {g['total_edges']} edges. Length buckets "
              f"hold about equal numbers of dialogues: " + ", ".join(
                  f"{n} ({d} dialogues, {u} labelled utterances)" for n, d, u in
                  zip(names, g["bucket_dialogues"], g["bucket_utterances"])) + ".")]
    rows = [["full graph", "nothing", 0, num(g["full"]["weighted_f1"], "{:.4f}"), "",
             *[num(v, "{:.4f}") for v in g["full"]["by_length"]]]]
    series = {"full": g["full"]["by_length"]}
    for name, v in g["variants"].items():
        if "note" in v:
            rows.append([name, v["removes"], 0, v["note"], "", *[""] * len(names)])
            continue
        rows.append([name, v["removes"], v["edges_removed"], num(v["weighted_f1"], "{:.4f}"),
                     num(v["delta"], "{:+.4f}"),
                     *[f"{num(a, '{:.4f}')} ({num(d, '{:+.4f}')})" for a, d in zip(v["by_length"],
                                                                                     v["delta_by_length"])]])
        series[name] = v["by_length"]
    out.append(table(["variant", "removes", "edges removed", "weighted F1", "Δ vs full",
                      *[f"wF1 {n} (Δ)" for n in names]], rows))
    out.append(svg.bars(names, series, ymax=1.0, ylabel="weighted F1 by dialogue length"))
    return "".join(out)


def robustness_html(r: dict) -> str:
    out = [_p(f"The run trained with modality dropout {r['training_modality_dropout']} (the probability of "
              "hiding each modality of an utterance in training). Missing: each modality in turn is emptied "
              "in a share of the utterances that have it; noise: Gaussian noise of a multiple of each feature "
              f"channel's standard deviation over the split, on every modality (seed {r['seed']}).")]
    shares = [f"{int(s * 100)}%" for s in r["shares"]]
    out.append(table(["modality missing in", *shares],
                     [[m, *[num(v, "{:.4f}") for v in row]] for m, row in r["missing"].items()]))
    out.append(table(["noise (× channel std)", *[str(x) for x in r["noise_levels"]]],
                     [["weighted F1", *[num(v, "{:.4f}") for v in r["noise"]]]]))
    for note in r["notes"]:
        out.append(_p(note, "note"))
    out.append('<div class="figs">' + svg.lines(shares, dict(r["missing"]), ylabel="weighted F1", ymin=0, ymax=1)
               + svg.lines(["0"] + [str(x) for x in r["noise_levels"]], {"all modalities": [r["full"], *r["noise"]]},
                           ylabel="weighted F1 under noise", ymin=0, ymax=1) + "</div>")
    return "".join(out)


def cost_html(c: dict) -> str:
    m = c["measured"]
    if "note" in m:
        out = [_p(m["note"], "note")]
    else:
        out = [_p(f"One batch of the split ({m['dialogues']} dialogues, {m['utterances']} utterances, frames "
                  + ", ".join(f"{k} {v}" for k, v in m["frames"].items())
                  + f"), forward + backward, every frame a query, median of {m['repeats']} after a warm-up, "
                  f"on {m['device']} with {m['threads']} threads. MoA: {m['moa_source']} (E = {m['num_experts']}, "
                  f"top-k = {m['top_k']}, d = {m['d_model']}, {m['num_heads']} heads)."),
               table(["block", "ms per step", "against plain"],
                     [[f"the run's MoA (E = {m['num_experts']}, top-k = {m['top_k']})", num(m["moa_ms"], "{:.1f}"),
                       num(m["overhead"], "{:.2f}×")],
                      *([[f"routed MoA, a fresh block (E = {m['routed']['num_experts']}, top-k = "
                          f"{m['routed']['top_k']})", num(m["routed"]["ms"], "{:.1f}"),
                          num(m["routed"]["overhead"], "{:.2f}×")]] if m.get("routed") else []),
                      ["plain cross-attention", num(m["plain_ms"], "{:.1f}"), "1.00×"]])]
    if c.get("run_epoch_seconds") is not None:
        out.append(_p(f"The run's median epoch took {c['run_epoch_seconds']:.1f} s (training and the dev pass)."))
    b = c.get("benchmark")
    if b:
        out.append(_p(f"Benchmark record {b['file']} ({b['device']}, {b['date']}):"))
        out.append(table(["case", "ms", "MoA / plain", "utterances", "frames", "d", "E", "k"],
                         [[r["name"], num(r["ms"], "{:.1f}"), num(r["moa_overhead"], "{:.2f}"), r["utterances"],
                           r["frames"], r["d"], r["E"], r["k"]] for r in b["rows"]]))
    return "".join(out)


def dialogues_html(v: dict) -> str:
    size = (f"{v['shown']} of the split's {v['total']} dialogues, a random sample (seed {v['seed']})"
            if v["sampled"] else f"all {v['total']} dialogues of the split")
    legend = ("Strips: one cell per frame, coloured by the chosen value (range per modality below); outlined "
              "cells are inside the model's hotspot windows")
    if v["has_truth"]:
        legend += ", a dot marks the generator's bursts (filled: evidence; hollow: decoy or distractor)"
    if v["has_words"]:
        legend += "; text frames are words, shaded the same way"
    return (_p(f"Showing {size}.") + _p(legend + ".")
            + '<div class="controls"><label>dialogue <select id="dialogue-select"></select></label> '
              '<label>colour by <select id="colour-by"><option value="score">hotspot score</option>'
              '<option value="gate">gate α</option></select></label> <span id="colour-range"></span></div>'
              '<div id="dialogue-view"></div>')


RENDER = {"summary": summary_html, "gates": gates_html, "routing": routing_html, "alignment": alignment_html,
          "graph": graph_html, "robustness": robustness_html, "cost": cost_html, "dialogues": dialogues_html}


def page(report: dict) -> str:
    """The whole HTML document of a report dict (:func:`~hotspot_erc.inspect.report.build_report`)."""
    s = report["summary"]
    title = f"hotspot-erc report: {os.path.basename(os.path.normpath(s['run_dir']))} ({s['split']})"
    nav = " · ".join(f'<a href="#{k}">{escape(t)}</a>' for k, t in SECTIONS)
    body = []
    for key, heading in SECTIONS:
        body.append(f'<section id="{key}"><h2>{escape(heading)}</h2>{RENDER[key](report[key])}</section>')
    # "</" inside a script element would end it early; JSON allows the escaped form.
    data = json.dumps({"dialogues": report["dialogues"], "label_names": s["label_names"]}).replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
            f"<style>{_asset('report.css')}</style></head><body>"
            f"<header><h1>{escape(title)}</h1><p class=\"meta\">written {escape(report['written'])} by hotspot-erc "
            f"{escape(report['version'])}; the same numbers are in {escape(report['json_name'])}</p>"
            f"<nav>{nav}</nav></header><main>{''.join(body)}</main>"
            f'<script type="application/json" id="report-data">{data}</script>'
            f"<script>{_asset('report.js')}</script></body></html>\n")
