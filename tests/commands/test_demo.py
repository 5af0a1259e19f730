import argparse
import json
from pathlib import Path

from kp3d import cli
from kp3d.commands import demo


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_category_option() -> None:
    assert parse().category in demo.DEMO_CATEGORIES
    assert parse("--category", "creature").category == "creature"
    assert "face" not in demo.DEMO_CATEGORIES  # needs a third-party model


def test_a_tiny_demo_runs_end_to_end_on_the_chosen_category(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--category", "head", "--steps", "1"]
    argv += ["--n-train", "16", "--n-test", "8", "--size", "32", "--k", "4"]
    assert cli.main(argv) == 0
    assert json.loads((out / "head-train" / "meta.json").read_text())["category"] == "head"
    assert (out / "head-test" / "meta.json").is_file()
    page = (out / "run" / "report.html").read_text()
    assert "In plain words" in page
    assert "tracks_sv3" in json.dumps(json.loads((out / "run" / "eval.json").read_text()))
