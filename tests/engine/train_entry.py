"""``kp3d train`` with the dummy method on :class:`TinyImages`, as a separate process (for the
kill test). Each sample read sleeps 1 ms, so a 120-step run lasts long enough to be killed."""

import sys
import time
from pathlib import Path

import torch


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    torch.set_num_threads(1)  # as the test process (tests/conftest.py): same kernels, same bits

    from dummy_method import TinyImages

    import kp3d.engine.request as train_request
    import kp3d.methods
    from kp3d.cli import main as kp3d_main

    class SlowImages(TinyImages):
        def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
            time.sleep(0.001)
            return super().__getitem__(i)

    kp3d.methods.REGISTRY["dummy"] = "dummy_method:SPEC"
    train_request.open_training_data = lambda request: SlowImages()
    return kp3d_main(["train", "--method", "dummy", "--data", "unused", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
