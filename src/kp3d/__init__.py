"""kp3d: unsupervised 3D keypoints, skeletons, canonical shapes and poses from image collections."""

__version__ = "0.1.0"
