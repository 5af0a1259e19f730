"""``c3dpo``: the C3DPO 2D→3D lifter (Novotny et al., ICCV 2019); see :mod:`.model`."""

from kp3d.data.inputs import KEYPOINTS
from kp3d.methods.base import MethodSpec
from kp3d.methods.c3dpo.model import C3DPO, C3DPOConfig, build, configure

SPEC = MethodSpec(
    config_cls=C3DPOConfig,
    build=build,
    configure=configure,
    inputs=KEYPOINTS,
    protocols=("lifting",),
    description="C3DPO: lift 2D keypoints to 3D with a canonicalisation network (no 3D labels)",
    # bf16 (~3 significant digits) is too coarse for reprojection residuals of ~1% of a shape.
    train_defaults={"lr": 1e-3, "batch_size": 256, "bf16": False},
)

__all__ = ["C3DPO", "SPEC", "C3DPOConfig"]
