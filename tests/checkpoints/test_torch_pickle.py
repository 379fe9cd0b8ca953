import os
import pickle

import numpy as np
import pytest

from frozen_det.checkpoints.torch_pickle import UnsafeCheckpointError, load_torch_state_dict

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def state_dict():
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "bn.running_var": torch.rand(4, generator=g),
        "bn.num_batches_tracked": torch.tensor(7),
        "half": torch.randn(2, 5, generator=g).half(),
        "ints": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        # A non-contiguous view sharing storage with another tensor.
        "view": torch.arange(24.0).reshape(4, 6).t()[1:],
    }


@pytest.mark.parametrize("zip_format", [True, False])
def test_reads_both_torch_formats_exactly(tmp_path, state_dict, zip_format):
    path = tmp_path / "w.pth"
    torch.save(state_dict, path, _use_new_zipfile_serialization=zip_format)
    loaded = load_torch_state_dict(path)
    assert set(loaded) == set(state_dict)
    for name, tensor in state_dict.items():
        expected = tensor.numpy()
        assert loaded[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(loaded[name], expected)


def test_unwraps_state_dict_wrapper(tmp_path, state_dict):
    path = tmp_path / "w.pth"
    torch.save({"state_dict": state_dict, "epoch": 3}, path)
    assert set(load_torch_state_dict(path)) == set(state_dict)


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_hostile_pickle_is_refused_without_running(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    # torch.save pickles arbitrary objects: a hostile file is one call away.
    torch.save({"w": torch.zeros(2), "x": _Hostile(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_hostile_plain_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    # A legacy-format header followed by a malicious object pickle.
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, f)
        pickle.dump(_Hostile(marker), f)
    with pytest.raises(UnsafeCheckpointError):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_truncated_file_is_a_clear_error(tmp_path, state_dict):
    path = tmp_path / "w.pth"
    torch.save(state_dict, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[:-16])
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        load_torch_state_dict(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_torch_state_dict(tmp_path / "nope.pth")
