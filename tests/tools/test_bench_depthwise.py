"""tools/bench_depthwise.py: the layer inventory, and one tiny real run of both row kinds."""

import bench_depthwise  # (tools/ is on sys.path: tests/tools/conftest.py)
import pytest


def test_lite0_depthwise_layers_at_512():
    layers = bench_depthwise.depthwise_layers("lite0", 512)
    # Block 1a: 32 stem channels at 256x256, 3x3, no expansion; 2a: 16 x 6 = 96 channels, stride 2.
    assert layers[0] == {"hw": 256, "channels": 32, "kernel": 3, "stride": 1, "blocks": ["block1a"]}
    assert layers[1] == {"hw": 256, "channels": 96, "kernel": 3, "stride": 2, "blocks": ["block2a"]}
    # Every block is counted once; the last group (320 outputs) runs at 16x16, 5x5 of the 7 groups.
    assert sum(len(layer["blocks"]) for layer in layers) == 16
    assert layers[-1]["hw"] == 16 and layers[-1]["channels"] == 1152


@pytest.mark.slow
def test_tiny_run_agrees_and_prints_a_row_per_contender(capsys):
    result = bench_depthwise.main(["--size", "32", "--batch", "1", "--repeats", "1"])
    assert all(d < 1e-4 for d in result["max_rel_diff"].values()), result["max_rel_diff"]
    keys = set(result["median_s"])
    assert ("backbone", "fast", "fine-tune") in keys and ("backbone", "xla", "frozen") in keys
    assert all(v > 0 for v in result["median_s"].values())
    table = capsys.readouterr().out
    assert "| backbone | fine-tune |" in table and "| 16x16x32 k3 s1 | fwd+bwd |" in table
    with pytest.raises(SystemExit, match="unknown"):
        bench_depthwise.main(["--rows", "convs"])
