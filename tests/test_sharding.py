"""solve(shard=True) on 4 forced host devices equals the single-device run (ufm.solver._shard_samples).

XLA_FLAGS must be set before JAX initialises, so the sharded runs are made in a subprocess; the
single-device runs they are compared with are made here, in the test's own (one-device) process, and
the sharded results come back exactly (JSON writes each float with all its digits).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ufm

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = dict(K=4, n=6, delta=0.1)  # N = 24 samples, 6 per device
# the default max_iters (20,000: both converge in a few hundred iterations) sizes the history as most solver
# tests do, so the single-device reduced run is their compiled program (K = 4, d = 4)
SOLVE = dict(tol=1e-12)
METHODS = ("lbfgs", "reduced")

SCRIPT = f"""
import json
import jax
jax.config.update("jax_enable_x64", True)
import ufm

assert jax.device_count() == 4, jax.devices()
problem = ufm.Problem(**{PROBLEM!r})
out = {{}}
for method in {METHODS!r}:
    sharded = ufm.solve(problem, method, shard=True, **{SOLVE!r})
    assert sharded.converged, sharded.message
    # the compiled loop really took H split over the 4 devices
    loop = [p for p in ufm.compiled_programs() if p.function.__name__ in ("run_loop", "reduced_loop")][-1]
    H_sharding = loop.compiled.input_shardings[0][0].H
    assert len(H_sharding.device_set) == 4 and not H_sharding.is_fully_replicated
    Z = sharded.W.T @ sharded.H + sharded.b[:, None]
    out[method] = dict(objective=float(sharded.objective), Z=Z.tolist())
try:
    ufm.solve(ufm.Problem(K=3, n=3), shard=True)
except ValueError as error:
    assert "divisible by the number of devices (4)" in str(error)
else:
    raise AssertionError("N = 9 on 4 devices must be refused")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def sharded():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method", METHODS)
def test_sharded_solve_equals_single_device(sharded, method):
    single = ufm.solve(ufm.Problem(**PROBLEM), method, **SOLVE)
    assert single.converged, single.message
    # same minimizer: both stop at |grad| <= 1e-12 |grad_0|; only the order of the float sums differs.
    # W, H are defined up to a rotation, so compare the invariants: objective and logits Z = W^T H + b.
    assert abs(sharded[method]["objective"] - single.objective) <= 1e-13 * abs(single.objective)
    Z1 = single.W.T @ single.H + single.b[:, None]
    Z4 = np.asarray(sharded[method]["Z"])
    assert np.max(np.abs(Z1 - Z4)) <= 1e-9 * np.max(np.abs(Z1)), np.max(np.abs(Z1 - Z4))
