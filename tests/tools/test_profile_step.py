"""tools/profile_step.py: HLO parsing, model-part attribution, and a real profile of a small
Flax model with a loop (a detector's train step compiles too slowly for this suite; the
attribution code is the same)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import profile_step
import pytest

HLO = """HloModule jit_step, is_scheduled=true, entry_computation_layout={(f32[2]{0})->f32[2]{0}}

%fused_computation.1 (param_0: f32[3,3,4,4]) -> f32[3,3,4,4] {
  %param_0 = f32[3,3,4,4]{3,2,1,0} parameter(0)
  %rev.1 = f32[3,3,4,4]{3,2,1,0} reverse(%param_0), dimensions={0,1}, metadata={op_name="jit(step)/transpose(jvp(Net))/Net.features/backbone/conv/rev"}
  ROOT %copy.1 = f32[3,3,4,4]{3,2,1,0} copy(%rev.1)
}

%body.2 (p: (s32[], f32[2])) -> (s32[], f32[2]) {
  %p = (s32[], f32[2]{0}) parameter(0)
  ROOT %add.3 = f32[2]{0} add(%p, %p), metadata={op_name="jit(step)/jvp(Net)/Net.proposals/while/body/add"}
}

ENTRY %main.9 (x: f32[2]) -> f32[2] {
  %x = f32[2]{0} parameter(0)
  %transpose_copy_fusion = f32[3,3,4,4]{3,2,1,0} fusion(%x), kind=kLoop, calls=%fused_computation.1
  %while.5 = (s32[], f32[2]{0}) while(%t), condition=%cond, body=%body.2, metadata={op_name="jit(step)/jvp(Net)/Net.proposals/while"}
  %topk.1 = (f32[2,4]{1,0}, s32[2,4]{1,0}) custom-call(%x), custom_call_target="TopK", metadata={op_name="jit(step)/jvp(Net)/Net.proposals/top_k"}
  %conv.7 = f32[2]{0} convolution(%x, %x), window={size=3x3}, metadata={op_name="jit(step)/jvp(Net)/Net.features/neck/conv/conv_general_dilated"}
  ROOT %add.8 = f32[2]{0} add(%x, %x), metadata={op_name="jit(step)/sub"}
}
"""


def test_hlo_instructions_opcodes_entry_and_fusion_metadata():
    ins = profile_step.hlo_instructions(HLO)
    assert ins["while.5"]["opcode"] == "while" and ins["while.5"]["entry"]
    assert ins["topk.1"]["opcode"] == "custom-call" and ins["topk.1"]["kind"] == "TopK"
    assert ins["conv.7"]["opcode"] == "convolution"
    assert ins["add.3"]["entry"] is False  # a loop body's instruction
    assert ins["rev.1"]["entry"] is False  # a fusion body's instruction
    # A fusion without metadata takes an op_name from inside it.
    fusion = ins["transpose_copy_fusion"]
    assert fusion["kind"] == "kLoop" and fusion["op_name"].endswith("backbone/conv/rev")
    assert profile_step.opcode_class(fusion) == "fusion:loop"


@pytest.mark.parametrize(
    "op_name, part",
    [
        ("jit(step)/transpose(jvp(Net))/Net.training_losses/Net.features/backbone/stage1/conv", "features/backbone"),
        ("jit(step)/jvp(Net)/Net.training_losses/Net.box_stage/box_heads_0/fc0", "box_stage/box_heads_0"),
        ("jit(step)/jvp(Net)/Net.training_losses/Net.proposals/vmap()/while", "proposals"),
        ("jit(step)/jvp(Net)/Net.training_losses/Net.box_stage/Net.roi_features/gather", "roi_features"),
        ("jit(step)/sub", "(optimizer)"),
        ("", "(no metadata)"),
    ],
)
def test_model_part(op_name, part):
    assert profile_step.model_part(op_name, {"backbone", "neck", "box_heads_0"}) == part


def test_hlo_instructions_know_loop_bodies():
    ins = profile_step.hlo_instructions(HLO)
    assert ins["while.5"]["bodies"] == ["cond", "body.2"]
    assert ins["add.3"]["computation"] == "body.2" and ins["conv.7"]["bodies"] == []


def _event(op, ts, dur):
    return {"ph": "X", "ts": ts, "dur": dur, "tid": 1, "args": {"hlo_module": "jit_step", "hlo_op": op}}


@pytest.mark.parametrize("body_start", [1500, 7000], ids=["body_inside_loop_event", "body_after_it"])
def test_attribute_counts_loop_bodies_once(body_start):
    """A loop's body is counted once, under its own instructions, whether its events nest in
    the loop's event (synchronous) or come after it (XLA:CPU's asynchronous bodies); the loop
    row keeps only its exclusive time."""
    ins = profile_step.hlo_instructions(HLO)
    events = [
        _event("transpose_copy_fusion", 0, 1000),
        _event("while.5", 1000, 5000),
        _event("add.3", body_start, 4000),
        _event("conv.7", 6000, 2000),
        _event("add.8", 8000, 500),
    ]
    out = profile_step.attribute(events, ins, {"backbone", "neck"}, steps=1)
    loop_ms = 1.0 if body_start == 1500 else 5.0  # the loop event minus the body nested in it
    assert out["op_ms"] == pytest.approx(1 + loop_ms + 4 + 2 + 0.5)
    assert out["per_op"]["add.3"] == 4.0 and out["per_op"]["while.5"] == pytest.approx(loop_ms)
    assert out["per_part"][("features/backbone", "backward")] == 1.0
    assert out["per_part"][("proposals", "forward")] == pytest.approx(loop_ms + 4.0)
    assert out["per_part"][("features/neck", "forward")] == 2.0
    assert out["per_class"]["while"] == pytest.approx(loop_ms) and out["per_class"]["add"] == 4.5


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(64, name="encoder")(x)
        x = jax.lax.fori_loop(0, 50, lambda i, h: jnp.tanh(h @ h.T @ h / 64.0), x)
        return nn.Dense(8, name="head")(x).sum()


def test_profile_compiled_real_trace(tmp_path):
    model = _Net()
    x = jnp.ones((64, 32))
    params = model.init(jax.random.key(0), x)
    step = jax.jit(jax.grad(lambda p, x: model.apply(p, x)))
    compiled = step.lower(params, x).compile()
    result = profile_step.profile_compiled(compiled, (params, x), {"encoder", "head"}, steps=2, trace_dir=str(tmp_path))
    assert result["op_ms"] > 0 and result["wall_ms"] > 0
    assert result["op_ms"] <= 2.5 * result["wall_ms"]  # at most 2 threads' worth, with slack
    assert not result["unmatched"]
    parts = {part for part, _ in result["per_part"]}
    assert "encoder" in parts and "head" in parts
    assert ("encoder", "backward") in result["per_part"]  # the weight gradient
    # The 50-step loop's body dominates; counted once, the ops cannot exceed two threads' time.
    body_ms = sum(
        ms for name, ms in result["per_op"].items() if "while/body" in result["instructions"][name]["op_name"]
    )
    assert body_ms > 0.5 * result["op_ms"]
    table = profile_step.report(result, top=5)
    assert "while/body" in table and "encoder" in table
