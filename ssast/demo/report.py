"""The demo's summary table: linear probes and retrieval (``probes.json`` of ``python -m probes linear``) and
fine-tuning (``results.json`` of ``python -m finetune`` runs), one row per feature source.

    python -m ssast.demo.report --probes runs/demo/probes.json \
        --finetune "fine-tuned, random init"=runs/demo/ft_scratch \
        "fine-tuned, SSL pretrained"=runs/demo/ft_pretrained
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssast.tables import cell


def report(probes: dict, finetuned: dict[str, dict]) -> str:
    """The demo's markdown table: probes and retrieval per feature source, then the fine-tuning rows."""
    tasks = list(next(iter(probes.values())))
    lines = [
        "| features | "
        + " | ".join(f"{t}, linear probe" for t in tasks)
        + " | "
        + " | ".join(f"{t}, retrieval mAP@10" for t in tasks)
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


def main(argv: list[str] | None = None) -> str:
    """The command line: print the table of a probes.json and fine-tuning run folders."""
    parser = argparse.ArgumentParser(prog="python -m ssast.demo.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", required=True, help="probes.json of python -m probes linear")
    parser.add_argument("--finetune", nargs="*", default=[], metavar="NAME=RUN_DIR", help="fine-tuning runs")
    args = parser.parse_args(argv)
    finetuned = {
        name: json.loads((Path(d) / "results.json").read_text())
        for name, d in (item.rsplit("=", 1) for item in args.finetune)
    }
    text = report(json.loads(Path(args.probes).read_text()), finetuned)
    print(text)
    return text


if __name__ == "__main__":
    main()
