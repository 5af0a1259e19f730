"""``c3dpo``: the C3DPO 2D→3D lifter (Novotny et al., ICCV 2019); see :mod:`.model`."""

from kp3d.data.inputs import KEYPOINTS
from kp3d.methods.base import MethodSpec
from kp3d.methods.c3dpo.model import C3DPO, C3DPOConfig, build
from kp3d.methods.configure import keypoints_from_data
from kp3d.nn.lifting import LIFTING_TRAIN_DEFAULTS

SPEC = MethodSpec(
    config_cls=C3DPOConfig,
    build=build,
    configure=keypoints_from_data,
    inputs=KEYPOINTS,
    protocols=("lifting",),
    description="C3DPO: lift 2D keypoints to 3D with a canonicalisation network (no 3D labels)",
    train_defaults=dict(LIFTING_TRAIN_DEFAULTS),
)

__all__ = ["C3DPO", "SPEC", "C3DPOConfig"]
