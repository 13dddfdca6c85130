"""The demo's summary table: linear probes and retrieval (``probes.json`` of ``python -m probes linear``) and
fine-tuning (``results.json`` of ``python -m finetune`` runs), one row per feature source; the learning curve
of a pretraining run probed periodically, drawn beside probes.json (``learning_curve.png``); and one page,
``report.html`` beside probes.json, with the table, the learning curve, the probes' layer and pooling sweep
(``probes.sweep.png``) and the run's masked reconstruction (``images/valid_reconstruction.png``).

    python -m ssast.demo.report probes=runs/demo/probes.json curve=runs/demo/seed0 \\
        'finetune={"from random init": runs/demo/ft_scratch, "from SSL pretrained": runs/demo/ft_pretrained}'
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ssast.cli import run_cli
from ssast.config import cli_args
from ssast.eval.tables import cell
from ssast.train.curves import learning_curve, plot_curves


def report(probes: dict, finetuned: dict[str, dict]) -> str:
    """The demo's markdown table: probes and retrieval per feature source, then the fine-tuning rows."""
    tasks, k = list(next(iter(probes.values()))), retrieval_k(probes)
    lines = [
        "| features | "
        + " | ".join(f"{t}, linear probe" for t in tasks)
        + " | "
        + " | ".join(f"{t}, retrieval mAP{f'@{k}' if k else ''}" for t in tasks)
        + " | sound events, fine-tuned |",
        "|---" * (2 * len(tasks) + 2) + "|",
    ]
    for name, by_task in probes.items():
        cells = [cell([r["score"] for r in by_task[t]], ci=False) for t in tasks]
        cells += [
            cell([r["retrieval"] for r in by_task[t]], ci=False) if "retrieval" in by_task[t][0] else "" for t in tasks
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " | |")
    for name, result in finetuned.items():
        folds = ", ".join(f"fold {k}" for k in result["folds"])
        lines.append(
            f"| {name} | "
            + " | " * (2 * len(tasks) - 1)
            + f" | {100 * result['mean_accuracy']:.1f} ({folds}, epoch {result['epoch']}) |"
        )
    return "\n".join(lines)


def retrieval_k(probes: dict) -> Optional[int]:
    """The k of the probes' retrieval mAP@k, or None when they ran none."""
    found = {
        r["retrieval_k"] for by_task in probes.values() for rs in by_task.values() for r in rs if "retrieval_k" in r
    }
    return found.pop() if found else None


def fbank_level(probes: dict) -> dict[str, float]:
    """The fbank statistics' probe and retrieval values, keyed as a learning curve's points are."""
    level = {}
    for task, (result,) in probes.get("fbank mean+std", {}).items():
        level[task] = result["score"]
        if "retrieval" in result:
            level[f"{task}_map"] = result["retrieval"]
    return level


def draw_curve(probes: dict, run_dir: str, path: Path) -> None:
    """The learning curve of one periodically probed pretraining run, with the fbank level of `probes`."""
    curve = {f"pretrained ({Path(run_dir).name})": learning_curve(run_dir)}
    plot_curves(curve, path, fbank_level(probes), retrieval_k(probes))


def html_page(table: str, figures: dict[str, Path], folder: Path) -> str:
    """A self-contained page: the markdown `table` as an HTML table, then each existing figure (linked relative
    to `folder`, where the page goes) under its title."""
    rows = [[html.escape(c.strip()) for c in line.strip("|").split("|")] for line in table.splitlines()]
    head, body = rows[0], rows[2:]
    cells = "".join(f"<th>{c}</th>" for c in head)
    cells += "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    shown = "".join(
        f'<h2>{html.escape(t)}</h2><img src="{html.escape(os.path.relpath(p, folder))}" alt="{html.escape(t)}">'
        for t, p in figures.items()
        if p.is_file()
    )
    style = "body{font-family:sans-serif;margin:1.5em}td,th{border:1px solid #ccc;padding:.2em .6em}img{max-width:100%}"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>SSAST demo</title><style>{style}</style></head>'
        f'<body><h1>SSAST demo</h1><table style="border-collapse:collapse">{cells}</table>{shown}</body></html>'
    )


PROG = "python -m ssast.demo.report"


@dataclass
class ReportConfig:
    """The runs a report reads."""

    probes: str  # probes.json of python -m probes linear
    finetune: dict[str, str] = field(default_factory=dict)  # a column name -> a fine-tuning run folder
    curve: str = ""  # a pretraining run with periodic probes (probe.every)


def main(argv: list[str] | None = None) -> str:
    """The command line: print the table of a probes.json and fine-tuning run folders; one line on a user error."""
    args = cli_args(ReportConfig, argv, prog=PROG, doc=__doc__)
    return run_cli(PROG, lambda: write(args))


def write(args: ReportConfig) -> str:
    """The table (printed and returned), the learning curve and the report page."""
    probes = json.loads(Path(args.probes).read_text())
    finetuned = {name: json.loads((Path(d) / "results.json").read_text()) for name, d in args.finetune.items()}
    table = text = report(probes, finetuned)
    folder = Path(args.probes).parent
    figures = {"probes: layer and pooling sweep": Path(args.probes).with_suffix(".sweep.png")}
    if args.curve:
        path = folder / "learning_curve.png"
        draw_curve(probes, args.curve, path)
        text += f"\n\nlearning curve of {args.curve}: {path}"
        figures = {
            f"learning curve of {args.curve}": path,
            **figures,
            f"masked reconstruction, {args.curve}": Path(args.curve) / "images" / "valid_reconstruction.png",
        }
    (folder / "report.html").write_text(html_page(table, figures, folder))
    text += f"\nreport page: {folder / 'report.html'}"
    print(text)
    return text


if __name__ == "__main__":
    main()
