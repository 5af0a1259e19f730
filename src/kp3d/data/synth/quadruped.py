"""``quadruped``: a procedural four-legged animal with 18 joints: a long body, a neck and head
with snout and ears, a tail, and four three-joint legs.

Keypoints (world frame y up, z the way it faces, x to its left): ``pelvis`` (root, between the
hips), ``withers``, ``neck`` (where neck meets skull), ``head`` (centre of the skull), ``nose``,
``tail_tip``, then per leg ``<leg>_shoulder``/``<leg>_hip``, ``<leg>_knee`` (carpus or stifle)
and ``<leg>_paw`` for front/back, left/right. Left parts are tinted warm, right parts cool.
"""

from __future__ import annotations

from kp3d.data.synth.articulated import ArticulatedSpec, Joint, Part, mirror

_FRONT_LEFT = (
    Joint("front_left_shoulder", 1, (1.0, -0.6, 0.1), 0.12, "shoulder"),
    Joint(
        "front_left_knee", 6, (0.0, -1.0, 0.0), 0.25, "front_upper", flex=(-45, 35), abduct=(-5, 15)
    ),
    Joint("front_left_paw", 7, (0.0, -1.0, 0.0), 0.23, "front_lower", flex=(-10, 90)),
)
_BACK_LEFT = (
    Joint("back_left_hip", 0, (1.0, -0.4, 0.0), 0.12, "hip"),
    Joint(
        "back_left_knee", 12, (0.0, -1.0, 0.35), 0.27, "back_upper", flex=(-50, 30), abduct=(-5, 15)
    ),
    Joint("back_left_paw", 13, (0.0, -1.0, -0.35), 0.30, "back_lower", flex=(-40, 60)),
)
JOINTS: tuple[Joint, ...] = (
    Joint("pelvis"),
    Joint("withers", 0, (0.0, 0.08, 1.0), 0.50, "body", flex=(-10, 10), twist=(-20, 20)),
    Joint(
        "neck",
        1,
        (0.0, 0.75, 0.66),
        0.28,
        "neck",
        flex=(-35, 40),
        abduct=(-15, 15),
        twist=(-50, 50),
    ),
    Joint("head", 2, (0.0, 0.2, 1.0), 0.10, "head", flex=(-30, 30), twist=(-20, 20)),
    Joint("nose", 3, (0.0, -0.3, 1.0), 0.16, "snout"),
    Joint("tail_tip", 0, (0.0, 0.4, -1.0), 0.35, "tail", flex=(-60, 40), twist=(-50, 50)),
    *_FRONT_LEFT,
    *mirror(_FRONT_LEFT, 9),
    *_BACK_LEFT,
    *mirror(_BACK_LEFT, 15),
)

_WARM, _COOL = (0.95, 0.45, 0.25), (0.25, 0.45, 0.95)
_WARM2, _COOL2 = (0.85, 0.75, 0.2), (0.2, 0.75, 0.7)
_DARK, _LIGHT = (0.15, 0.12, 0.1), (0.95, 0.92, 0.85)
_REF_BODY = (1.0, 0.0, 0.0)
PARTS: tuple[Part, ...] = (
    Part("body", 0, 1, (0.15, 0.18, 0.17), (0.5, 0.5, 0.5), ref=_REF_BODY, lod=(6, 12)),
    Part("neck", 1, 2, (0.07, 0.07, 0.07), (0.5, 0.5, 0.5)),
    Part("head", 3, None, (0.085, 0.085, 0.11), _LIGHT, lod=(6, 10)),
    Part("snout", 3, 4, (0.045, 0.045, 0.045), _DARK),
    Part("left_ear", 3, None, (0.025, 0.05, 0.02), _WARM, offset=(0.06, 0.09, -0.02)),
    Part("right_ear", 3, None, (0.025, 0.05, 0.02), _COOL, offset=(-0.06, 0.09, -0.02)),
    Part("tail", 0, 5, (0.03, 0.03, 0.03), _DARK),
    Part("front_left_upper", 6, 7, (0.055, 0.055, 0.055), _WARM),
    Part("front_left_lower", 7, 8, (0.04, 0.04, 0.04), _WARM2),
    Part("front_left_paw", 8, None, (0.045, 0.03, 0.06), _DARK, offset=(0.0, 0.0, 0.02)),
    Part("front_right_upper", 9, 10, (0.055, 0.055, 0.055), _COOL),
    Part("front_right_lower", 10, 11, (0.04, 0.04, 0.04), _COOL2),
    Part("front_right_paw", 11, None, (0.045, 0.03, 0.06), _DARK, offset=(0.0, 0.0, 0.02)),
    Part("back_left_upper", 12, 13, (0.07, 0.07, 0.07), _WARM),
    Part("back_left_lower", 13, 14, (0.045, 0.045, 0.045), _WARM2),
    Part("back_left_paw", 14, None, (0.045, 0.03, 0.06), _DARK, offset=(0.0, 0.0, 0.02)),
    Part("back_right_upper", 15, 16, (0.07, 0.07, 0.07), _COOL),
    Part("back_right_lower", 16, 17, (0.045, 0.045, 0.045), _COOL2),
    Part("back_right_paw", 17, None, (0.045, 0.03, 0.06), _DARK, offset=(0.0, 0.0, 0.02)),
)

SPEC = ArticulatedSpec(name="quadruped", joints=JOINTS, parts=PARTS, elevation=(-5.0, 50.0))
