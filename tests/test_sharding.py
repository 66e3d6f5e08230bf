"""solve(shard=True) on 4 forced host devices equals the single-device run (ufm.solver._shard_samples).

XLA_FLAGS must be set before JAX initialises, so the comparison runs in a subprocess.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import ufm
from ufm import solver

assert jax.device_count() == 4, jax.devices()
problem = ufm.Problem(K=4, n=6, delta=0.1)            # N = 24 samples, 6 per device
for method in ("lbfgs", "reduced"):
    kwargs = dict(tol=1e-12, max_iters=100_000)
    single = ufm.solve(problem, method, **kwargs)
    sharded = ufm.solve(problem, method, shard=True, **kwargs)
    assert single.converged and sharded.converged, (single.message, sharded.message)
    # the compiled loop really took H split over the 4 devices
    H_sharding = [s for s in solver._COMPILED.values()][-1][0].input_shardings[0][0].H
    assert len(H_sharding.device_set) == 4 and not H_sharding.is_fully_replicated
    # same minimizer: both stop at |grad| <= 1e-12 |grad_0|; only the order of the float sums differs.
    # W, H are defined up to a rotation, so compare the invariants: objective and logits Z = W^T H + b.
    assert abs(sharded.objective - single.objective) <= 1e-13 * abs(single.objective), method
    Z1 = single.W.T @ single.H + single.b[:, None]
    Z4 = sharded.W.T @ sharded.H + sharded.b[:, None]
    assert np.max(np.abs(Z1 - Z4)) <= 1e-9 * np.max(np.abs(Z1)), (method, np.max(np.abs(Z1 - Z4)))
try:
    ufm.solve(ufm.Problem(K=3, n=3), shard=True)
except ValueError as error:
    assert "divisible by the number of devices (4)" in str(error)
else:
    raise AssertionError("N = 9 on 4 devices must be refused")
print("OK")
"""


def test_sharded_solve_equals_single_device():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-3000:]
