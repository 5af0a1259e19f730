import json
import logging
from pathlib import Path

import pytest

from kp3d.engine.monitor import MetricsLog, ProgressDisplay, TensorBoard, read_metrics
from kp3d.errors import ConfigError


def test_read_metrics_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert read_metrics(path) == [{"step": 1}, {"step": 2}]
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_metrics_log_starts_empty_or_cuts_back_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (2, 4, 6)) + '{"step": 8, "lo')
    log = MetricsLog(path, keep_until_step=4)
    log.write({"step": 6, "loss": 1.0})
    log.close()
    assert read_metrics(path) == [{"step": 2}, {"step": 4}, {"step": 6, "loss": 1.0}]
    MetricsLog(path, keep_until_step=None).close()
    assert path.read_text() == ""


def test_plain_progress_logs_at_most_every_few_seconds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kp3d.engine")
    with ProgressDisplay(steps=10, minutes=None, enabled=False) as p:
        p.update(1, 0.1, loss=None, images_per_s=None)
        p.update(2, 0.2, loss=0.5, images_per_s=100.0)
        p.update(10, 1.0, loss=0.25, images_per_s=120.0, force=True)
    assert [r.getMessage() for r in caplog.records] == [
        "step 1/10  loss -  - img/s  0 s",
        "step 10/10  loss 0.25  120 img/s  1 s",
    ]


def test_progress_bar_fraction_follows_steps_or_time() -> None:
    with ProgressDisplay(steps=100, minutes=1.0, enabled=True) as p:
        p.update(10, 30.0, loss=1.0, images_per_s=10.0)
        assert p._fraction(10, 30.0) == 0.5
        assert p._fraction(90, 30.0) == 0.9


def test_tensorboard_without_the_package_is_a_config_error(tmp_path: Path) -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="tensorboard package is not installed"):
            TensorBoard(tmp_path)
    else:
        tb = TensorBoard(tmp_path)
        tb.write({"step": 1, "loss": 0.5})
        tb.close()
        assert any(tmp_path.iterdir())
