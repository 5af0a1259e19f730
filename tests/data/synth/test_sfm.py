import struct

import numpy as np
import pytest

from kp3d.data.synth.sfm import (
    load_sfm,
    read_blendshapes,
    read_contours,
    read_landmark_mapping,
    read_shape_model,
)
from kp3d.errors import DataError


def test_shape_model_round_trip(tiny_sfm) -> None:
    m = read_shape_model(tiny_sfm.folder / "sfm_shape_3448.bin")
    n = len(tiny_sfm.mean)
    assert m.mean.shape == (n, 3) and m.basis.shape == (n, 3, 3)
    np.testing.assert_allclose(m.mean, tiny_sfm.mean, rtol=1e-6, atol=1e-4)
    # Column-major on disk: basis column j is component j, vertex-interleaved x0 y0 z0 x1 ...
    np.testing.assert_allclose(m.basis.reshape(3 * n, 3), tiny_sfm.basis, atol=1e-6)
    np.testing.assert_allclose(m.eigenvalues, tiny_sfm.eigenvalues)
    np.testing.assert_array_equal(m.triangles, tiny_sfm.triangles)
    np.testing.assert_array_equal(m.texcoords, tiny_sfm.texcoords)


def test_blendshapes_mapping_and_contours_round_trip(tiny_sfm) -> None:
    b = read_blendshapes(tiny_sfm.folder / "expression_blendshapes_3448.bin")
    assert b.names == tiny_sfm.names
    np.testing.assert_allclose(b.offsets, tiny_sfm.offsets, atol=1e-5)
    mapping = read_landmark_mapping(tiny_sfm.folder / "ibug_to_sfm.txt")
    assert mapping.vertices == tiny_sfm.mapping
    assert mapping.contour_right == tuple(range(1, 9)) and mapping.contour_left == tuple(
        range(10, 18)
    )
    right, left = read_contours(tiny_sfm.folder / "sfm_model_contours.json")
    assert list(right) == tiny_sfm.right and list(left) == tiny_sfm.left
    model = load_sfm(tiny_sfm.folder)
    assert model.num_vertices == len(tiny_sfm.mean)


def test_truncated_and_padded_files_are_data_errors(tmp_path, sfm_writer) -> None:
    m = sfm_writer(tmp_path / "m")
    data = (m.folder / "sfm_shape_3448.bin").read_bytes()
    bad = tmp_path / "short.bin"
    bad.write_bytes(data[:-10])
    with pytest.raises(DataError, match="short.bin.*truncated"):
        read_shape_model(bad)
    bad.write_bytes(data + b"\0\0\0\0")
    with pytest.raises(DataError, match="unexpected bytes"):
        read_shape_model(bad)
    bad.write_bytes(struct.pack("<I", 2) + data[4:])
    with pytest.raises(DataError, match="version 2"):
        read_shape_model(bad)
    blend = (m.folder / "expression_blendshapes_3448.bin").read_bytes()
    bad.write_bytes(blend[:30])
    with pytest.raises(DataError, match="truncated"):
        read_blendshapes(bad)


def test_bad_mapping_and_missing_files(tmp_path) -> None:
    bad = tmp_path / "map.txt"
    bad.write_text("[landmark_mappings]\n9 = 'x'\n")
    with pytest.raises(DataError, match="not integer"):
        read_landmark_mapping(bad)
    bad.write_text("[landmark_mappings\n")
    with pytest.raises(DataError, match="TOML"):
        read_landmark_mapping(bad)
    bad.write_text('{"model_contour": {}}')
    with pytest.raises(DataError, match="right_contour"):
        read_contours(bad)
    with pytest.raises(DataError, match="missing sfm_shape_3448.bin"):
        load_sfm(tmp_path)


def test_mapping_out_of_range_is_an_error(tmp_path, sfm_writer) -> None:
    m = sfm_writer(tmp_path / "m")
    (m.folder / "ibug_to_sfm.txt").write_text("[landmark_mappings]\n31 = 99999\n")
    with pytest.raises(DataError, match="vertex 99999"):
        load_sfm(m.folder)


def test_the_real_model_reads_and_matches_its_documented_frame(shared_sfm) -> None:
    model = load_sfm(shared_sfm)
    s = model.shape
    assert s.mean.shape == (3448, 3) and s.basis.shape == (3448, 3, 63)
    assert s.triangles.shape == (6736, 3) and len(model.expressions.names) == 6
    # Orthonormal components, descending variances.
    B = s.basis.reshape(-1, 63).astype(np.float64)
    np.testing.assert_allclose(B.T @ B, np.eye(63), atol=1e-4)
    assert np.all(np.diff(s.eigenvalues) <= 0)
    # x to the subject's left, y up, z towards the viewer: nose tip in front, chin below the
    # eyes, the right eye's outer corner (iBUG 37) at negative x.
    v = model.mapping.vertices
    assert s.mean[v[31], 2] > s.mean[v[37], 2]
    assert s.mean[v[9], 1] < s.mean[v[37], 1]
    assert s.mean[v[37], 0] < 0 < s.mean[v[46], 0]
    assert 61 not in v and 65 not in v
