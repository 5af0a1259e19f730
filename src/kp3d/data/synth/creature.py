"""``creature``: a procedural biped with 16 joints, a big head with a snout and ears, and
mittens and feet, in the spirit of the Human3.6M 16-joint skeleton.

Keypoints (world frame y up, z the way it faces, x to its left; angles in degrees, negative
flex swings a limb forwards): ``pelvis`` (root), ``chest``, ``neck``, ``head`` (centre of the
skull), and for each side ``shoulder``, ``elbow``, ``wrist``, ``hip``, ``knee``, ``ankle``.
Left parts are tinted warm, right parts cool, so the two sides can be told apart.
"""

from __future__ import annotations

from kp3d.data.synth.articulated import ArticulatedSpec, Joint, Part, mirror

_LEFT_ARM = (
    Joint("left_shoulder", 1, (1.0, 0.0, 0.0), 0.14, "shoulder", abduct=(-10, 15)),
    Joint(
        "left_elbow",
        4,
        (0.0, -1.0, 0.0),
        0.22,
        "upper_arm",
        flex=(-160, 45),
        abduct=(-10, 100),
        twist=(-45, 45),
    ),
    Joint("left_wrist", 5, (0.0, -1.0, 0.0), 0.20, "forearm", flex=(-140, 0)),
)
_LEFT_LEG = (
    Joint("left_hip", 0, (1.0, -0.25, 0.0), 0.10, "hip"),
    Joint(
        "left_knee",
        10,
        (0.0, -1.0, 0.0),
        0.26,
        "thigh",
        flex=(-100, 30),
        abduct=(-10, 45),
        twist=(-30, 30),
    ),
    Joint("left_ankle", 11, (0.0, -1.0, 0.0), 0.25, "shin", flex=(0, 130)),
)
JOINTS: tuple[Joint, ...] = (
    Joint("pelvis"),
    Joint(
        "chest",
        0,
        (0.0, 1.0, 0.0),
        0.32,
        "spine",
        flex=(-15, 35),
        abduct=(-20, 20),
        twist=(-30, 30),
    ),
    Joint(
        "neck", 1, (0.0, 1.0, 0.1), 0.12, "neck", flex=(-20, 30), abduct=(-20, 20), twist=(-20, 20)
    ),
    Joint(
        "head", 2, (0.0, 1.0, 0.15), 0.13, "head", flex=(-30, 30), abduct=(-20, 20), twist=(-60, 60)
    ),
    *_LEFT_ARM,
    *mirror(_LEFT_ARM, 7),
    *_LEFT_LEG,
    *mirror(_LEFT_LEG, 13),
)

_WARM, _COOL = (0.95, 0.45, 0.25), (0.25, 0.45, 0.95)
_WARM2, _COOL2 = (0.85, 0.75, 0.2), (0.2, 0.75, 0.7)
_DARK, _LIGHT = (0.15, 0.12, 0.1), (0.95, 0.92, 0.85)
PARTS: tuple[Part, ...] = (
    Part("torso", 0, 1, (0.16, 0.13, 0.11), (0.5, 0.5, 0.5), lod=(6, 12)),
    Part("neck", 1, 2, (0.06, 0.06, 0.06), (0.5, 0.5, 0.5)),
    Part("head", 3, None, (0.12, 0.13, 0.12), _LIGHT, lod=(6, 12)),
    Part("snout", 3, None, (0.055, 0.05, 0.07), _DARK, offset=(0.0, -0.03, 0.11)),
    Part("left_ear", 3, None, (0.035, 0.06, 0.025), _WARM, offset=(0.09, 0.1, -0.01)),
    Part("right_ear", 3, None, (0.035, 0.06, 0.025), _COOL, offset=(-0.09, 0.1, -0.01)),
    Part("left_upper_arm", 4, 5, (0.06, 0.06, 0.06), _WARM),
    Part("left_forearm", 5, 6, (0.055, 0.055, 0.055), _WARM2),
    Part("left_hand", 6, None, (0.065, 0.065, 0.065), _DARK),
    Part("right_upper_arm", 7, 8, (0.06, 0.06, 0.06), _COOL),
    Part("right_forearm", 8, 9, (0.055, 0.055, 0.055), _COOL2),
    Part("right_hand", 9, None, (0.065, 0.065, 0.065), _DARK),
    Part("left_thigh", 10, 11, (0.08, 0.08, 0.08), _WARM),
    Part("left_shin", 11, 12, (0.065, 0.065, 0.065), _WARM2),
    Part("left_foot", 12, None, (0.06, 0.045, 0.1), _DARK, offset=(0.0, -0.03, 0.05)),
    Part("right_thigh", 13, 14, (0.08, 0.08, 0.08), _COOL),
    Part("right_shin", 14, 15, (0.065, 0.065, 0.065), _COOL2),
    Part("right_foot", 15, None, (0.06, 0.045, 0.1), _DARK, offset=(0.0, -0.03, 0.05)),
)

SPEC = ArticulatedSpec(name="creature", joints=JOINTS, parts=PARTS, elevation=(-15.0, 50.0))
