"""Shared by the keypoint-discovery benchmarks (faces.py, creature.py): train one run, score it
with kp3d's evaluation harness, draw a keypoint montage, and merge result rows on disk; and by
every benchmark: ``KEY=VALUE`` list options, the empty ``--out`` check, the results files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset


def add_run_arguments(
    parser: argparse.ArgumentParser, *, out: str, k: Sequence[int], minutes: float, clock: str
) -> None:
    """The options every keypoint-discovery benchmark takes, with that benchmark's defaults:
    output folder, methods, K, budget, threads, image size, seed and extra config values."""
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--methods", nargs="+", default=["autolink", "autolink3d"])
    parser.add_argument("--k", type=int, nargs="+", default=list(k))
    parser.add_argument("--minutes", type=float, default=minutes, help="training budget per run")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default=clock,
        help="what --minutes measures: wall-clock or the process's CPU time",
    )
    parser.add_argument("--steps", type=int, default=None, help="step budget instead of --minutes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    add_list_argument(
        parser,
        "--set",
        metavar="KEY=VALUE",
        help="extra method-config values, e.g. n_basis=8 decoder_input=edges+depth "
        "augment.flip=0.5 (JSON values; anything that is not JSON is taken as a string; "
        "a dotted key sets a value of a nested table)",
    )


def run_budget(args: argparse.Namespace) -> dict[str, Any]:
    """The training budget of :func:`add_run_arguments`' options: ``--steps`` when given (no
    time limit), else ``--minutes`` on ``--clock`` (no step limit)."""
    if args.steps:
        return {"steps": args.steps, "minutes": None}
    return {"steps": None, "minutes": args.minutes, "clock": args.clock}


def add_list_argument(
    parser: argparse.ArgumentParser, flag: str, *, metavar: str, help: str
) -> None:
    """An option taking one or more values, which may be repeated (its values add up)."""
    parser.add_argument(flag, nargs="+", action="extend", default=[], metavar=metavar, help=help)


def check_out_is_empty(out: Path) -> None:
    """Exit with an error if ``out`` holds anything: a benchmark never mixes its results."""
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out} is not empty; choose another --out")


def write_results(out: Path, table: str, doc: dict[str, Any]) -> None:
    """Print ``table``, write it to ``out/results.md`` and ``doc`` to ``out/results.json``."""
    print(table)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(doc, indent=2))


def parse_set(pairs: Sequence[str], *, flag: str = "--set") -> dict[str, Any]:
    """``--set KEY=VALUE ...`` -> a dict: each value as JSON (numbers, true, null, lists, tables),
    or the plain string when it is not JSON, so ``decoder_input=edges+depth`` needs no quotes.
    A dotted key sets a value of a nested settings table: ``augment.flip=0.5`` gives
    ``{"augment": {"flip": 0.5}}`` (as ``--augment.flip 0.5`` does for ``kp3d train``).
    A key given twice is an error (``--set`` may be repeated; its values add up)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key or "" in key.split("."):
            raise SystemExit(f"error: {flag} {pair!r}: expected KEY=VALUE")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        *tables, name = key.split(".")
        table = out
        for i, part in enumerate(tables):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise SystemExit(
                    f"error: {flag} {key}: {'.'.join(tables[: i + 1])} is not a table of settings"
                )
        if name in table:
            raise SystemExit(f"error: {flag} {key}: given twice")
        table[name] = value
    return out


def run_grid(
    args: argparse.Namespace,
    data: Dataset,
    fit: Dataset,
    test: Dataset,
    *,
    after: Callable[[Path, dict[str, Any]], None] | None = None,
    data_path: Path | None = None,
) -> list[dict[str, Any]]:
    """:func:`train_and_score` for every method and K of ``args`` (:func:`add_run_arguments`),
    into ``args.out/METHOD-kK``; ``after(run_dir, row)`` may add to each row. Prints each row.
    ``data_path``, the training data's folder, is recorded in each run's ``config.json`` (as
    ``kp3d train`` does), so reports and ``kp3d train --data RUN`` can find the images."""
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = parse_set(args.set)
    budget = run_budget(args)
    rows = []
    for method in args.methods:
        for k in args.k:
            run_dir = args.out / f"{method}-k{k}"
            row = train_and_score(
                method,
                data,
                fit,
                test,
                run_dir,
                method_config={"k": k, "image_size": args.size, **extra},
                budget=budget,
                seed=args.seed,
                data_info=None
                if data_path is None
                else {"path": str(data_path.resolve()), "size": args.size, "format": None},
            )
            row["budget"] = budget
            if after is not None:
                after(run_dir, row)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def train_timed(
    method: str,
    data: Dataset,
    run_dir: Path,
    *,
    method_config: dict[str, Any],
    budget: dict[str, Any],
    seed: int = 0,
    data_info: dict[str, Any] | None = None,
) -> tuple[Any, float, float]:
    """Train ``method`` on ``data`` with its own training defaults under ``budget``, resuming
    ``run_dir`` if it exists; returns the engine's result, this call's wall and CPU seconds."""
    from kp3d.engine import train

    t0, c0 = time.perf_counter(), time.process_time()
    done = train(
        method,
        data,
        run_dir,
        method_config=method_config,
        # A mapping, not a TrainConfig: the method's train_defaults (kp3d train's) then apply.
        train_config={"seed": seed, **budget},
        resume=(run_dir / "config.json").exists(),
        data_info=data_info,
    )
    return done, time.perf_counter() - t0, time.process_time() - c0


def train_and_score(
    method: str,
    data: Dataset,
    fit: Dataset,
    test: Dataset,
    run_dir: Path,
    *,
    method_config: dict[str, Any],
    budget: dict[str, Any],
    seed: int = 0,
    data_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` with its own training defaults under ``budget`` (resuming
    ``run_dir`` if it exists), evaluate it with the regression fitted on ``fit`` and scored on
    ``test``, write ``run_dir/montage.png``.

    Returns a row: method, K, every result of
    :func:`kp3d.evaluation.evaluate_keypoint_discovery` (``name: value``), steps, images seen,
    wall and CPU seconds of this call, threads, the montage path.
    """
    from kp3d.data.schema import collate
    from kp3d.engine import load_run
    from kp3d.evaluation import collect, evaluate_keypoint_discovery
    from kp3d.viz.html import spanning_edges
    from kp3d.viz.report import draw_overlay, montage

    done, wall, cpu = train_timed(
        method,
        data,
        run_dir,
        method_config=method_config,
        budget=budget,
        seed=seed,
        data_info=data_info,
    )
    run = load_run(run_dir)
    with torch.no_grad():
        scores = evaluate_keypoint_discovery(collect(run.model, fit), collect(run.model, test))
        shown = collate([test[i] for i in range(0, len(test), max(1, len(test) // 32))][:32])
        pred = run.model.predict(shown)
    skeleton = run.model.artifacts().get("skeleton")
    edges = [] if skeleton is None else spanning_edges(skeleton.float().numpy())
    tiles = [
        draw_overlay(shown.image[i], pred.kp2d[i].numpy(), edges) for i in range(len(shown.name))
    ]
    montage(tiles).save(run_dir / "montage.png")
    steps = done.steps
    return {
        "method": method,
        "k": int(method_config["k"]),
        **{name: r["value"] for name, r in scores.items() if isinstance(r, dict) and "value" in r},
        "steps": steps,
        "images": steps * run.train_config.batch_size,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "threads": torch.get_num_threads(),
        "montage": str(run_dir / "montage.png"),
    }


def merge_results(
    out: Path,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    key: Sequence[str] = ("method", "k"),
) -> str:
    """Merge ``rows`` into ``out/results.json`` by ``key`` (several processes may share ``out``,
    e.g. one per core), rewrite ``out/results.md`` with ``columns``; returns the table.
    Fractions in NME columns (``nme...`` or ``DOMAIN_nme...``) are shown as percentages."""
    from kp3d.engine.atomic import atomic_write_text
    from kp3d.evaluation import format_value

    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    previous = json.loads(path.read_text()) if path.exists() else []
    done = {tuple(r[c] for c in key) for r in rows}
    merged = [r for r in previous if tuple(r[c] for c in key) not in done] + list(rows)
    merged.sort(key=lambda r: tuple(r[c] for c in key))
    atomic_write_text(path, json.dumps(merged, indent=2))

    def cell(r: dict[str, Any], c: str) -> str:
        v = r.get(c)
        if isinstance(v, float) and (c.startswith("nme") or "_nme" in c):
            return format_value("nme", v)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in merged]
    table = "\n".join(lines) + "\n"
    atomic_write_text(out / "results.md", table)
    return table
