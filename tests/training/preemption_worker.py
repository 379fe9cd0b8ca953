"""One host of a 2-process CPU "pod" (jax.distributed on localhost), run by
test_multihost_preemption.py: steps like the training loop and asks PreemptionFlag at every step
whether to save and stop; prints the step it stopped at as JSON."""

import json
import sys
import time

import jax

from frozen_det.training.checkpointing import PreemptionFlag

process_id, port = int(sys.argv[1]), sys.argv[2]
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
flag = PreemptionFlag()
print(json.dumps({"process": process_id, "ready": jax.process_count()}), flush=True)
step, stopped = 0, None
while step < 2000:
    step += 1
    time.sleep(0.02)
    if flag.should_stop(step):
        stopped = step
        break
print(json.dumps({"process": process_id, "stopped_at": stopped, "last_step": step}), flush=True)
flag.restore_handlers()
jax.distributed.shutdown()
