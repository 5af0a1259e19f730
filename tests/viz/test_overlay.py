import numpy as np
from PIL import Image

from kp3d.viz.overlay import draw_keypoints, skeleton_edges


def test_keypoints_are_drawn_where_they_are() -> None:
    image = Image.new("RGB", (40, 30), (0, 0, 0))
    out = draw_keypoints(image, np.array([[10.5, 20.5], [30.0, 5.0]]), radius=2)
    assert out.size == (40, 30) and out.mode == "RGB"
    a = np.asarray(out)
    assert a[20, 10].any() and a[4, 29].any()  # pixels under the points are coloured
    assert not a[0, 0].any() and not a[29, 39].any()  # far away untouched
    assert a[20, 10].tolist() != a[4, 29].tolist()  # one colour per keypoint


def test_edges_are_drawn_by_weight_and_invisible_points_hollow() -> None:
    image = Image.new("RGB", (50, 10), (0, 0, 0))
    kp = np.array([[5.0, 5.0], [45.0, 5.0], [np.nan, 1.0]])
    out = np.asarray(draw_keypoints(image, kp, edges=[(0, 1, 1.0), (0, 2, 1.0)], radius=2))
    assert out[5, 25].min() > 200  # the strong edge, white, half way
    hollow = np.asarray(draw_keypoints(image, kp[:2], vis=np.array([False, True]), radius=3))
    assert not hollow[5, 5].any() and hollow[5, 45].any()


def test_skeleton_edges_keep_strong_pairs() -> None:
    w = np.array([[0, 1.0, 0.01], [1.0, 0, 0.5], [0.01, 0.5, 0]])
    assert skeleton_edges(w) == [(0, 1, 1.0), (1, 2, 0.5)]
    assert skeleton_edges(None) == []


def test_skeleton_edges_of_near_uniform_weights_are_the_maximum_spanning_tree() -> None:
    rng = np.random.default_rng(0)
    k = 6
    w = 0.018 + 0.001 * rng.random((k, k))
    w = (w + w.T) / 2
    edges = skeleton_edges(w)
    assert len(edges) == k - 1  # a tree, not the K(K-1)/2 hairball of a plain threshold
    # No other spanning tree is heavier: brute force over all trees of K=6 is too many, so
    # check the cut property instead: each tree edge is the heaviest across its own cut.
    for a, b, v in edges:
        rest = [(i, j) for i, j, _ in edges if (i, j) != (a, b)]
        side = {a}
        changed = True
        while changed:
            changed = False
            for i, j in rest:
                if (i in side) != (j in side):
                    side |= {i, j}
                    changed = True
        crossing = [w[i, j] for i in range(k) for j in range(k) if (i in side) != (j in side)]
        assert v == max(crossing)
