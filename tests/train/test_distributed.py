"""Two real processes on localhost (jax.distributed, gloo) train like one process with the same global batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nforge_jax.model.checkpoint import encoder_arrays, load_encoder
from train_helpers import make_tiny_store

HERE = Path(__file__).parent
RUNNER = """
import sys
sys.path.insert(0, {here!r})
from nforge_jax.train.distributed import maybe_initialize_distributed
maybe_initialize_distributed()
from train_helpers import tiny_config
from nforge_jax.train.loop import train
train(tiny_config({store!r}, epochs=2, mesh_data=2), {workdir!r}, progress=False)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(store, workdir, devices, env_extra):
    code = RUNNER.format(here=str(HERE), store=str(store), workdir=str(workdir))
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **env_extra}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    make_tiny_store(tmp_path / "store")
    # the one-process run and the two-process run are independent (own workdirs): side by side
    single = launch(tmp_path / "store", tmp_path / "single", 2, {})
    port = free_port()
    procs = [launch(tmp_path / "store", tmp_path / "multi", 1,
                    {"NFORGE_COORDINATOR": f"127.0.0.1:{port}", "NFORGE_NUM_PROCESSES": "2",
                     "NFORGE_PROCESS_ID": str(i)}) for i in range(2)]
    outs = [p.communicate(timeout=900)[0].decode() for p in procs]
    out, _ = single.communicate(timeout=900)
    assert single.returncode == 0, out.decode()[-3000:]
    # A failure in one process shows up as a barrier timeout in the other: print both.
    assert [p.returncode for p in procs] == [0, 0], "\n".join(
        f"--- process {i} (exit {p.returncode}) ---\n{o[-3000:]}" for i, (p, o) in enumerate(zip(procs, outs)))
    a = encoder_arrays(load_encoder(tmp_path / "single" / "final_model")[0])
    b = encoder_arrays(load_encoder(tmp_path / "multi" / "final_model")[0])
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=2e-3, atol=2e-4, err_msg=key)
    # Each process kept its own data-iterator position in the shared checkpoint.
    steps = sorted((tmp_path / "multi" / "checkpoints").glob("[0-9]*"))
    assert {p.name for p in (steps[-1] / "data_iter").iterdir()} >= {"process_0-of-2.json", "process_1-of-2.json"}
