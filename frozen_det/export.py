"""Export a trained detector run as a TensorFlow SavedModel (and a TFLite model where the ops allow).

    python -m frozen_det.export --config CONFIG --workdir DIR --output OUT [--step N] [--platforms=cpu,cuda]
        [--notflite]

OUT must be new or empty (an export never overwrites); it receives the SavedModel
(`saved_model.pb`, `variables/`), `export.json` (run, step, signature, class names, what
happened to TFLite) and `model.tflite` when the TFLite conversion works (with TensorFlow 2.21
it fails for both detectors, in RoIAlign and in NMS: docs/usage.md, "Export"). The model: the
run's detector at its latest (or `--step`) checkpoint, `model.type` "two_stage" (Faster / Mask
/ Cascade R-CNN) or "retinanet".

The signature "serving_default" takes ONE image, as TF Serving's and the TF Object Detection
API's detectors do (a batch dimension of exactly 1, any height and width):

    image           uint8   [1, H, W, 3]   RGB
    ->
    boxes           float32 [1, N, 4]      [xmin, ymin, xmax, ymax] in the image's own pixels
    classes         int32   [1, N]         class ids 1..num_classes-1 (0 is background; names in export.json)
    scores          float32 [1, N]         best first
    num_detections  int32   [1]            rows [0, num_detections) are detections, the rest zeros
    masks           float32 [1, N, M, M]   (Mask R-CNN only) box-relative mask probabilities

N is `model.detections.max_detections`; every detection the model keeps (score above
`model.detections.score_threshold`) is returned: filter by score yourself (`predict`'s
`--min_score`). These are exactly `python -m frozen_det.predict`'s detections: inside the
graph the image gets the same evaluation preprocessing as TF ops (`DetectionTask.preprocess_tf`:
longer side to `data.canvas`, padded bottom / right, normalised), the JAX model runs at the fixed
canvas shape through `jax.experimental.jax2tf` (native serialization, one XlaCallModule op, its
weights SavedModel variables), and boxes come back in original pixels. A mask's M x M grid
spans its box; to paste it into the image use `frozen_det.evaluation.coco.paste_mask(mask,
(ymin, xmin, ymax, xmax), (H, W))`, the rule `predict` draws with.

The XlaCallModule op carries code lowered for `--platforms` (default: cpu); a model served on
a GPU needs `--platforms=cpu,cuda`. Its StableHLO is written in the newest version this
TensorFlow reads (`stablehlo_for_tensorflow`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from frozen_det.runtime import flag_values, one_line_errors, prepare_entry_point, run_main, wants_traceback

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
TFLITE_FILE = "model.tflite"
INFO_FILE = "export.json"


def check_output(output: str) -> None:
    """Refuses an --output that exists and is not an empty folder (the export never overwrites)."""
    if os.path.isdir(output) and not os.listdir(output):
        return
    if os.path.lexists(output):
        what = "a folder that is not empty" if os.path.isdir(output) else "a file"
        raise FileExistsError(
            f"--output {output} is {what}: an export never overwrites; give a new (or empty) folder, "
            f"or remove {output} first"
        )


def check_platforms(platforms) -> tuple[str, ...]:
    names = tuple(p.strip() for p in platforms if p.strip())
    unknown = [p for p in names if p not in PLATFORMS]
    if unknown or not names:
        raise ValueError(f"--platforms {','.join(platforms)}: give one or more of {', '.join(PLATFORMS)}")
    return names


def export(
    config,
    workdir: str,
    output: str,
    step: int | None = None,
    platforms=("cpu",),
    tflite: bool = True,
) -> dict:
    """Writes the SavedModel of the run at `workdir` (module docstring) to `output`; returns what
    export.json records. `config` as `predict`'s (None: the one the run saved)."""
    import jax

    from frozen_det.tasks.detection import DetectionTask
    from frozen_det.training.run import Run

    check_output(output)
    platforms = check_platforms(platforms)
    with Run(workdir, config) as run:
        task, model = run.task, run.model
        if not isinstance(task, DetectionTask):
            raise ValueError(
                f"model.type={run.config.model.type!r}: the export writes detectors only "
                "(model.type 'two_stage' or 'retinanet')"
            )
        state = run.restored_state(run.check_step(step))
        saved_step = int(jax.device_get(state.step))
        variables = jax.device_get(state.variables())
    module, serve = build_module(task, model, variables, platforms)
    max_detections = int(task.config.model.detections.max_detections)
    info = {
        "workdir": os.path.abspath(workdir),
        "step": saved_step,
        "model_type": task.name,
        "canvas": int(task.config.data.canvas),
        "max_detections": max_detections,
        "class_names": class_names(task),
        "platforms": list(platforms),
        "signature": {
            "name": SIGNATURE,
            "inputs": {"image": "uint8 [1, H, W, 3] RGB, any H and W"},
            "outputs": output_doc(max_detections, task.with_masks),
        },
    }
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(output))}.", dir=parent)
    try:
        import tensorflow as tf

        with stablehlo_for_tensorflow():  # tracing `serve` serializes the model (once: the signature)
            tf.saved_model.save(module, staging, signatures={SIGNATURE: serve.get_concrete_function()})
        check_stablehlo_versions(os.path.join(staging, "saved_model.pb"))
        if tflite:
            written, reason = write_tflite(staging, os.path.join(staging, TFLITE_FILE), info["canvas"])
            info["tflite"] = {"written": written, "reason": reason}
        else:
            info["tflite"] = {"written": False, "reason": "not asked for"}
        with open(os.path.join(staging, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
        check_output(output)  # still new or empty: nothing else wrote there meanwhile
        if os.path.isdir(output):
            os.rmdir(output)
        os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    info["output"] = os.path.abspath(output)
    return info


def class_names(task) -> list[str] | None:
    """The run's class names, index = class id (0: background), as `predict` names them; None
    (and a warning) when the data that names them cannot be read here."""
    from frozen_det.data import detection

    try:
        return list(detection.build_source(task.data_config()).info.class_names)
    except (OSError, ValueError) as e:
        log.warning("class names not recorded in %s (the run's data cannot be read: %s)", INFO_FILE, e)
        return None


def _variable_name(path) -> str:
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    return re.sub(r"[^A-Za-z0-9_./-]", "_", name)


def build_module(task, model, variables, platforms=("cpu",)):
    """(module, serve): the tf.Module that `export` saves, the model's variables
    (`module.weights`, named by their paths), and the tf.function of its signature (module
    docstring), `serve(image)`. Trace `serve` inside `stablehlo_for_tensorflow()`."""
    import jax
    import numpy as np
    import tensorflow as tf
    from jax.experimental import jax2tf

    module = tf.Module(name="frozen_det_detector")
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    module.weights = [
        tf.Variable(np.asarray(leaf), trainable=False, name=_variable_name(path)) for path, leaf in paths_leaves
    ]
    with_masks = bool(task.with_masks)
    keys = ("original_boxes", "scores", "classes", "valid") + (("masks",) if with_masks else ())

    def infer(leaves, image, image_info):
        """predict's jitted inference: the canvas batch of one image -> the model's detections."""
        batch = {"image": image, "image_info": image_info}
        out = model.apply(jax.tree_util.tree_unflatten(treedef, leaves), batch, train=False)
        return {k: out[k] for k in keys}

    infer_tf = jax2tf.convert(infer, with_gradient=False, native_serialization_platforms=tuple(platforms))

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="image")], autograph=False)
    def serve(image):
        canvas_image, image_info = task.preprocess_tf(image[0])
        out = infer_tf(module.weights, canvas_image[None], image_info[None])
        valid = out["valid"][0]
        # Valid rows first, in the model's (score) order; the rest zeros.
        order = tf.argsort(tf.cast(tf.logical_not(valid), tf.int32), stable=True)
        keep = tf.gather(valid, order)
        keep_f = tf.cast(keep, tf.float32)
        yxyx = tf.gather(out["original_boxes"][0], order)
        result = {
            "boxes": (tf.gather(yxyx, [1, 0, 3, 2], axis=-1) * keep_f[:, None])[None],
            "classes": (tf.gather(out["classes"][0], order) * tf.cast(keep, tf.int32))[None],
            "scores": (tf.gather(out["scores"][0], order) * keep_f)[None],
            "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32))[None],
        }
        if with_masks:
            masks = tf.cast(tf.gather(out["masks"][0], order), tf.float32)
            result["masks"] = (masks * keep_f[:, None, None])[None]
        return result

    return module, serve


def output_doc(max_detections: int, with_masks: bool) -> dict:
    """The signature's outputs in words (export.json)."""
    n = max_detections
    doc = {
        "boxes": f"float32 [1, {n}, 4] [xmin, ymin, xmax, ymax] in the input image's pixels",
        "classes": f"int32 [1, {n}] class ids (index into class_names; 0 pads)",
        "scores": f"float32 [1, {n}] best first",
        "num_detections": "int32 [1] rows before it are detections, the rest zeros",
    }
    if with_masks:
        doc["masks"] = f"float32 [1, {n}, M, M] mask probabilities on each box's M x M grid"
    return doc


@contextlib.contextmanager
def stablehlo_for_tensorflow():
    """Inside, jax serializes StableHLO that this TensorFlow's XlaCallModule op can read.

    jax writes the newest StableHLO version at least 4 weeks old (for jax 0.10.2: 1.15.0, where
    `lax.top_k` is a `vhlo.composite_v2`), while TensorFlow reads up to its own version (2.21:
    1.13.7); the SavedModel would then fail at its first call ("unregistered operation
    'vhlo.composite_v2'"). jax asks `get_version_from_compatibility_requirement` of jaxlib's
    StableHLO bindings for that version each time it serializes: inside, the answer is capped at
    TensorFlow's version (`check_stablehlo_versions` checks what was written)."""
    from jaxlib.mlir.dialects import stablehlo as jax_stablehlo

    original = jax_stablehlo.get_version_from_compatibility_requirement
    readable = tensorflow_stablehlo_version()

    def capped(requirement):
        return jax_stablehlo.get_smaller_version(original(requirement), readable)

    jax_stablehlo.get_version_from_compatibility_requirement = capped
    try:
        yield
    finally:
        jax_stablehlo.get_version_from_compatibility_requirement = original


def tensorflow_stablehlo_version() -> str:
    """The newest StableHLO version this TensorFlow reads (e.g. "1.13.7")."""
    from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo

    return tf_stablehlo.get_current_version()


def check_stablehlo_versions(saved_model_pb: str) -> None:
    """Every StableHLO program in the SavedModel is of a version this TensorFlow reads (else an
    error: the export would write a model that fails at its first call)."""
    from jaxlib.mlir.dialects import stablehlo as jax_stablehlo

    readable = tensorflow_stablehlo_version()
    with open(saved_model_pb, "rb") as f:
        versions = set(re.findall(rb"StableHLO_v(\d+\.\d+\.\d+)", f.read()))
    if not versions:
        raise RuntimeError(f"{saved_model_pb} holds no StableHLO program: the jax2tf conversion changed")
    for version in sorted(v.decode() for v in versions):
        if jax_stablehlo.get_smaller_version(version, readable) != version:
            raise ValueError(
                f"the exported model is StableHLO {version} but this TensorFlow reads up to {readable}: "
                "use the jax and tensorflow versions pinned in pyproject.toml"
            )


def write_tflite(saved_model_dir: str, path: str, canvas: int) -> tuple[bool, str]:
    """Converts the SavedModel to TFLite (builtin ops, TensorFlow ops where needed) and writes
    `path` if the conversion succeeds and the TFLite interpreter runs the result on a probe
    image of another size than the canvas; (written, reason)."""
    import numpy as np
    import tensorflow as tf

    from frozen_det.runtime import _stderr_silenced

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    try:
        with _stderr_silenced():  # the converter's MLIR diagnostics: the error keeps the cause
            content = converter.convert()
    except Exception as e:  # noqa: BLE001 - any converter failure means: no TFLite model
        return False, f"the TFLite converter failed: {_converter_reason(e)}"
    try:
        runner = tf.lite.Interpreter(model_content=content).get_signature_runner(SIGNATURE)
        out = runner(image=np.zeros((1, canvas + 5, canvas // 2 + 3, 3), np.uint8))
        missing = {"boxes", "classes", "scores", "num_detections"} - set(out)
        if missing:
            raise ValueError(f"outputs {sorted(missing)} missing")
    except Exception as e:  # noqa: BLE001 - a model the interpreter cannot run is no TFLite model
        return False, f"converted, but the TFLite interpreter cannot run it: {_converter_reason(e)}"
    with open(path, "wb") as f:
        f.write(content)
    return True, f"TFLite builtin ops and TensorFlow (Flex) ops; {len(content)} bytes; runs on a probe image"


def _converter_reason(error: Exception) -> str:
    """The line of a converter error that names the cause (its messages run to pages), with the
    source line of the model it points at where it names one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:  # "<file>.py:<line>:<column>: error: <what>", the op of the model that failed
        located = re.search(r"(\S+\.py):(\d+):\d+: error:\s*(.+)", line)
        if located:
            source = re.sub(r"^.*/(?=frozen_det/)", "", located.group(1))
            return f"{located.group(3)} (at {source}:{located.group(2)})"[:400]
    for line in lines:
        found = re.search(r"error:\s*(.+)", line)
        if found or re.search(r"not supported|unsupported|failed to legalize", line, re.IGNORECASE):
            return re.sub(r"^loc\(.*\):\s+", "", found.group(1) if found else line)[:400]
    return (lines[0] if lines else type(error).__name__)[:400]


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: the export takes flags only")
    check_output(_OUTPUT.value)
    if not flags.FLAGS["verbosity"].present:
        # TensorFlow's saver resets absl's verbosity (and with it the root logger's level) to the
        # flag's value while it saves: the flag at WARNING keeps runtime.configure_logging's levels.
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    info = export(_CONFIG.value, _WORKDIR.value, _OUTPUT.value, _STEP.value, _PLATFORMS.value, tflite=_TFLITE.value)
    print(f"SavedModel of step {info['step']} written to {info['output']} (signature {SIGNATURE!r})", flush=True)
    tflite = info["tflite"]
    if tflite["written"]:
        print(f"TFLite: {os.path.join(info['output'], TFLITE_FILE)} ({tflite['reason']})", flush=True)
    else:
        print(f"TFLite: not written ({tflite['reason']})", flush=True)


if __name__ == "__main__":
    with one_line_errors(traceback=wants_traceback(sys.argv)):  # a taken --output: refused at once
        for value in flag_values(sys.argv, "output"):
            check_output(value)
    prepare_entry_point(sys.argv, runs=("workdir",))  # before anything (the config file too) imports TensorFlow
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
    _OUTPUT = flags.DEFINE_string("output", None, "New (or empty) directory for the SavedModel.")
    _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    _PLATFORMS = flags.DEFINE_list("platforms", ["cpu"], "Platforms to lower the model for: cpu, cuda, rocm, tpu.")
    _TFLITE = flags.DEFINE_boolean("tflite", True, "Also try a TFLite conversion (model.tflite).")
    flags.mark_flags_as_required(["config", "workdir", "output"])
    run_main(main)
