"""The evaluation's outputs: metrics.json (every figure with its definition and sample size),
report.md (the tables) and index.html (the tables, distance histograms, ROC-style curves and example
strips). Written atomically into a new folder; no password ever reaches them."""
from __future__ import annotations

import io
import json
import os

import numpy as np
from dominate import document, tags
from PIL import Image

from utils.fileio import atomic_save_image, atomic_write_bytes, atomic_write_text

from .attack import exhaust_time, human_duration
from .baselines import BASELINES
from .views import DIVERSITY_PAIRS, G_VIEWS

EXHAUST_BITS = (16, 32, 64)
CURVE_VIEWS = ("anonymized", "recovered", "wrong recovery 1", "blur sigma=side/16", "pixelation block=side/8",
               "solid mask")


def _get(figures, section, metric, view, recogniser=None):
    for f in figures:
        if (f["section"], f["metric"], f["view"], f["recogniser"]) == (section, metric, view, recogniser):
            return f["value"]
    return None


def _fmt(v, pct=False):
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def attack_summary(attack, device: str) -> dict | None:
    if attack is None or not attack.images:
        return None
    t = attack.time_per_guess
    return {
        "passwd_length": attack.length, "images": attack.images, "candidates_per_image": attack.candidates,
        "exhaustive": attack.exhaustive, "top1": attack.top(1), "top5": attack.top(5),
        "chance_top1": 1 / attack.candidates, "chance_top5": min(1.0, 5 / attack.candidates),
        "mean_rank": float(np.mean(attack.ranks)), "chance_mean_rank": (attack.candidates + 1) / 2,
        "ranks": attack.ranks, "device": device,
        "seconds_per_guess": t,
        "guess_definition": "two generator passes per candidate c, G(G(M, ~c), c), compared with M",
        "time_to_exhaust": {f"2^{b}": {"seconds": exhaust_time(t, b), "text": human_duration(exhaust_time(t, b))}
                            for b in EXHAUST_BITS},
    }


def password_advice(a: dict) -> str:
    """What the measured attack means for a user, in plain words (every number computed)."""
    t = a["seconds_per_guess"]
    e = {b: exhaust_time(t, b) for b in EXHAUST_BITS}
    works = a["top1"] > 2 * a["chance_top1"]
    if works:
        test = (f"The consistency test ranks the true password first for {100 * a['top1']:.0f}% of faces (chance "
                f"{100 * a['chance_top1']:.2f}%): an attacker who holds the model can confirm a guess without the "
                "original, so the number of codes is the only protection.")
    else:
        signal = (f" It still carries some signal: the true password ranks {a['mean_rank']:.0f} on average among "
                  f"{a['candidates_per_image']} candidates (chance {a['chance_mean_rank']:.1f}), which narrows the "
                  "search." if a["mean_rank"] < 0.75 * a["chance_mean_rank"] else "")
        test = (f"The consistency test ranks the true password first for {100 * a['top1']:.0f}% of faces, not clearly "
                f"above chance ({100 * a['chance_top1']:.2f}%): for this model it does not confirm a guess.{signal} An "
                "attacker may have a better test (a face recogniser and photos of suspects, or a person looking at "
                "the candidates), so the number of codes should be assumed to be the only protection.")
    return (f"{test} At the measured {t * 1e3:.3g} ms per guess ({a['device']}), one device tries all 2^16 codes in "
            f"{human_duration(e[16])}, 2^32 in {human_duration(e[32])} ({human_duration(e[32] / 1000)} on a thousand "
            f"devices) and 2^64 in {human_duration(e[64])} ({human_duration(e[64] / 1e6)} on a million). The "
            "paper's 16-bit passwords and 32-bit ones fall to anyone who holds the model and such a test; a user "
            "needs a model trained with passwords of 64 bits or more (passwd_length: 64) and a passphrase with at "
            "least that much entropy (a random 12-character password over 40 symbols carries about 64 bits).")


# ---- tables ---------------------------------------------------------------------------------------

def tables(figures, infos, protocol) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table of report.md and index.html."""
    recs = list(infos)
    out = []
    head = ["recogniser", "threshold", "same-identity pairs matched", "different pairs not matched",
            "balanced accuracy", "AUC", "rank-1 (leave one out)"]
    rows = []
    for r in recs:
        v = lambda m, r=r: _get(figures, "recogniser", m, "original", r)  # noqa: E731
        rows.append([r, f"{infos[r]['threshold']:.4g} ({infos[r]['threshold_source']})", _fmt(v("true_match_rate"), 1),
                     _fmt(v("true_non_match_rate"), 1), _fmt(v("balanced_accuracy"), 1), _fmt(v("auc")),
                     _fmt(v("rank1_leave_one_out"), 1)])
    out.append(("Recognisers on test originals (can they tell the identities apart?)", head, rows))

    views = list(G_VIEWS) + [bl.name for bl in BASELINES]
    fid = any(f["metric"] == "fid" for f in figures)
    head = ["view", "PSNR dB", "SSIM", "MS-SSIM", "face detected (dlib HOG)"] + (["FID"] if fid else [])
    for r in recs:
        head += [f"matched to original ({r})", f"rank-1 re-id ({r})"]
    rows = [["original", "", "", "", _fmt(_get(figures, "detection", "detection_rate", "original"), 1)]
            + [""] * fid + ["", ""] * len(recs)]
    for v in views:
        row = [v, _fmt(_get(figures, "quality", "psnr", v)), _fmt(_get(figures, "quality", "ssim", v)),
               _fmt(_get(figures, "quality", "ms_ssim", v)),
               _fmt(_get(figures, "detection", "detection_rate", v), 1)]
        if fid:
            row.append(_fmt(_get(figures, "realism", "fid", v)))
        for r in recs:
            row += [_fmt(_get(figures, "identity", "match_rate", v, r), 1),
                    _fmt(_get(figures, "identity", "rank1_reid", v, r), 1)]
        rows.append(row)
    out.append(("Privacy, recovery and realism per view (de-identification rate = 100% - matched)", head, rows))

    head = ["pair"] + [f"different people ({r})" for r in recs] + [f"mean distance ({r})" for r in recs]
    rows = []
    for a, b in DIVERSITY_PAIRS:
        pair = f"{a} vs {b}"
        rows.append([pair] + [_fmt(_get(figures, "diversity", "different_rate", pair, r), 1) for r in recs]
                    + [_fmt(_get(figures, "diversity", "mean_distance", pair, r)) for r in recs])
    out.append(("Diversity: are two transformations of one face two people?", head, rows))
    faces = faces_table(figures)
    if faces:
        out.append(faces)
    return out


FACES_TITLE = ("Faces, not blurs: does anonymize.py's detector (YuNet) still find a face, and is it as sharp? "
               "(targets for M and WR: at least 90% of the originals' detection rate, sharpness at least 0.7)")


def faces_table(figures) -> tuple[str, list[str], list[list[str]]] | None:
    """YuNet's detection rate and the sharpness ratio per view (None when neither was measured)."""
    yunet = {f["view"]: f["value"] for f in figures if f["metric"] == "yunet_rate"}
    ratio = {f["view"]: f["value"] for f in figures if f["metric"] == "yunet_rate_vs_original"}
    sharp = {f["view"]: f["value"] for f in figures if f["metric"] == "laplacian_variance_ratio"}
    if not yunet and not sharp:
        return None
    head = ["view", "face found (YuNet)", "YuNet rate / originals' rate", "sharpness / original's"]
    rows = [["original", _fmt(yunet.get("original"), 1), "", ""]] if "original" in yunet else []
    for v in list(G_VIEWS) + [bl.name for bl in BASELINES]:
        if v in yunet or v in sharp:
            rows.append([v, _fmt(yunet.get(v), 1), _fmt(ratio.get(v)), _fmt(sharp.get(v))])
    return FACES_TITLE, head, rows


def attack_table(a: dict) -> tuple[str, list[str], list[list[str]]]:
    kind = "all codes" if a["exhaustive"] else "the true code and random others"
    rows = [[f"{a['passwd_length']}", f"{a['images']}", f"{a['candidates_per_image']} ({kind})",
             f"{100 * a['top1']:.1f}% (chance {100 * a['chance_top1']:.2f}%)",
             f"{100 * a['top5']:.1f}% (chance {100 * a['chance_top5']:.2f}%)",
             f"{a['mean_rank']:.1f} (chance {a['chance_mean_rank']:.1f})",
             f"{a['seconds_per_guess'] * 1e3:.3g} ms ({a['device']})"]
            + [a["time_to_exhaust"][f"2^{b}"]["text"] for b in EXHAUST_BITS]]
    head = ["password bits", "faces", "candidates per face", "top-1", "top-5", "mean rank of the true code",
            "time per guess"] + [f"2^{b} codes" for b in EXHAUST_BITS]
    return "Password guessing without the original", head, rows


def markdown_table(head, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


# ---- plots --------------------------------------------------------------------------------------

def _finish_plot(fig, ax, out: str, name: str, xlabel: str, ylabel: str, title: str,
                 caption: str) -> tuple[str, str]:
    """Label, save atomically as out/name and close one figure; returns (name, caption) for the page."""
    import matplotlib.pyplot as plt  # plots() has chosen the Agg backend

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    atomic_write_bytes(os.path.join(out, name), _png(fig))
    plt.close(fig)
    return name, caption


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def plots(out: str, curves: dict) -> list[tuple[str, str]]:
    """Distance histograms and ROC-style curves per recogniser; returns (file, caption)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for base, c in curves.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        groups = [("same-identity originals", c["same"]), ("different-identity originals", c["different"])]
        groups += [(v, c["distances"][v]) for v in CURVE_VIEWS if v in c["distances"]]
        allv = np.concatenate([g for _, g in groups if len(g)])
        bins = np.linspace(allv.min(), allv.max() + 1e-9, 40)
        for label, d in groups:
            if len(d):
                ax.hist(d, bins=bins, density=True, histtype="step", linewidth=1.5, label=f"{label} ({len(d)})")
        for t in c["threshold"]:
            ax.axvline(t, color="k", linestyle="--", linewidth=1)
        made.append(_finish_plot(fig, ax, out, f"hist_{base}.png", f"distance ({base})", "density",
                                 f"{base}: distance to the original (dashed: thresholds)",
                                 f"{base}: distribution of the distance between each image and its original, "
                                 "and of pairs of originals"))

        fig, ax = plt.subplots(figsize=(5, 5))
        diff = np.sort(c["different"])
        ts = np.unique(np.concatenate([diff, np.quantile(allv, np.linspace(0, 1, 200))]))
        fmr = np.searchsorted(diff, ts, side="left") / max(1, len(diff))
        for label, d in [("same-identity originals", c["same"])] + [(v, c["distances"][v]) for v in CURVE_VIEWS
                                                                   if v in c["distances"]]:
            if len(d):
                ds = np.sort(d)
                ax.plot(fmr, np.searchsorted(ds, ts, side="left") / len(ds), label=label)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
        made.append(_finish_plot(fig, ax, out, f"roc_{base}.png", "false match rate (different-identity originals)",
                                 "match rate (pairs with the original)", f"{base}: verification curves",
                                 f"{base}: for every threshold, the share of pairs (original, view) matched against "
                                 "the share of different-identity original pairs matched; the diagonal is a "
                                 "recogniser that cannot tell"))
    return made


# ---- writing ------------------------------------------------------------------------------------

SHEET_COLUMNS = ("original", "anonymized", "second password", "recovered", "wrong password")
SHEET_VIEWS = (0, 1, 2, 3, 4)  # their indices in an example row (see EXAMPLE_VIEWS)


def example_sheet(rows: list, scale: int = 2, label_height: int = 14) -> Image.Image:
    """One strip per example face (original, anonymized, second password, recovered, wrong recovery),
    under a row of column titles: the picture a README shows."""
    from PIL import ImageDraw

    h, w = rows[0][0].shape[:2]
    cw, ch = w * scale, h * scale
    sheet = Image.new("RGB", (cw * len(SHEET_COLUMNS), label_height + ch * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(SHEET_COLUMNS):
        draw.text((c * cw + 2, 1), name, fill="black")
    for r, row in enumerate(rows):
        for c, v in enumerate(SHEET_VIEWS):
            tile = Image.fromarray(row[v]).resize((cw, ch), Image.NEAREST)
            sheet.paste(tile, (c * cw, label_height + r * ch))
    return sheet


def write_report(out, protocol, figures, infos, curves, attack, skipped, m, opts) -> None:
    a = attack_summary(attack, protocol["device"])
    data = {"protocol": protocol, "recognisers": infos, "figures": figures, "attack": a,
            "password_advice": password_advice(a) if a else None, "skipped": skipped,
            "definitions": {"M": "G(I, p)", "M2": "G(I, p2)", "R": "G(M, ~p)", "WR1, WR2": "G(M, w1), G(M, w2)",
                            "recovered (M as JPEG qQ)": "G(JPEG_Q(M), ~p)", "anonymized (JPEG qQ)": "JPEG_Q(M)",
                            "wrong recovery k (M as JPEG qQ)": "G(JPEG_Q(M), wk)"}}
    atomic_write_text(os.path.join(out, "metrics.json"), json.dumps(data, indent=1, default=float) + "\n")

    all_tables = tables(figures, infos, protocol) + ([attack_table(a)] if a else [])
    title = (f"Evaluation of {os.path.basename(protocol['checkpoint'])} on {protocol['images']} {protocol['dataset']} "
             f"test images ({protocol['identities']} identities)")
    md = [f"# {title}", "", "Protocol: docs/evaluation.md. Settings: " + ", ".join(
        f"{k} {protocol[k]}" for k in ("img_size", "passwd_length", "seed", "device", "precision")), ""]
    for name, info in infos.items():
        md.append(f"- **{name}**: {info['description']}; "
                  f"threshold {info['threshold']:.4g} ({info['threshold_source']})")
    md.append("")
    for t, head, rows in all_tables:
        md += [f"## {t}", "", markdown_table(head, rows), ""]
    if a:
        md += [password_advice(a), ""]
    md.append("Baselines: " + "; ".join(f"{k}: {v}" for k, v in protocol["baselines"].items()) + ".")
    md += ["", "Skipped: " + "; ".join(f"{s['what']} ({s['why']})" for s in skipped) if skipped else "", ""]
    atomic_write_text(os.path.join(out, "report.md"), "\n".join(md))

    images = plots(out, curves)
    doc = document(title=title)
    with doc.head:
        tags.meta(charset="utf-8")
        tags.style("body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;margin-bottom:1em}"
                   "td,th{border:1px solid #ccc;padding:3px 6px;font-size:0.85em} img.ex{image-rendering:pixelated}")
    with doc:
        tags.h2(title)
        tags.p("Protocol and definitions: docs/evaluation.md; every figure with its sample size: ",
               tags.a("metrics.json", href="metrics.json"),
               ". Passwords are drawn per image from the seed and never shown.")
        with tags.ul():
            for name, info in infos.items():
                tags.li(f"{name}: {info['description']}; "
                        f"threshold {info['threshold']:.4g} ({info['threshold_source']})")
        for t, head, rows in all_tables:
            tags.h3(t)
            with tags.table():
                with tags.tr():
                    for h in head:
                        tags.th(h)
                for r in rows:
                    with tags.tr():
                        for c in r:
                            tags.td(c)
        if a:
            tags.p(password_advice(a))
        tags.h3("Distances and verification curves")
        for name, caption in images:
            with tags.figure():
                tags.img(src=name, alt=caption)
                tags.figcaption(caption)
        tags.h3("Examples")
        cols = ["original", "anonymized", "second anonymization", "recovered", "wrong recovery 1",
                "wrong recovery 2"] + [bl.name for bl in BASELINES]
        with tags.table():
            with tags.tr():
                tags.th("image")
                for c in cols:
                    tags.th(c)
            for r, (row, t) in enumerate(zip(m.examples, m.example_titles)):
                with tags.tr():
                    tags.td(t)
                    for c, img in enumerate(row):
                        rel = f"examples/r{r:03d}_c{c:02d}.png"
                        atomic_save_image(Image.fromarray(img), os.path.join(out, rel))
                        h, w = img.shape[:2]
                        scale = max(1, 96 // w)
                        tags.td(tags.img(src=rel, width=w * scale, height=h * scale, cls="ex", alt=f"{cols[c]}, {t}"))
        if skipped:
            tags.p("Skipped: " + "; ".join(f"{s['what']} ({s['why']})" for s in skipped))
    atomic_write_text(os.path.join(out, "index.html"), doc.render())
    if m.examples:
        atomic_save_image(example_sheet(m.examples), os.path.join(out, "examples.png"))
