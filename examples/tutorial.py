# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Neural collapse as numbers you can check
#
# This notebook walks through the two halves of the package and where they meet:
#
# 1. `theory`: closed forms of the unconstrained feature model (UFM) — Guo et al.'s
#    minimizer (Theorem 4.1), the predicted probabilities p_t, p_n and the condition
#    number κ = K·p_t of the Hessian's loss blocks (Theorem 4.2);
# 2. `ufm`: a JAX solver for the same model, whose solution is held against the theory
#    number by number.
#
# It is executed by the test suite (`tests/test_examples.py`), so every output below is
# what the code gives today. The source is `examples/tutorial.py` (jupytext percent format);
# `jupytext --to ipynb examples/tutorial.py` makes the notebook.

# %%
import jax

jax.config.update("jax_enable_x64", True)  # float64: the comparisons below are at 1e-6 and finer

import matplotlib

matplotlib.use("Agg")  # no screen needed; in Jupyter the figures show inline as well
import matplotlib.pyplot as plt
import numpy as np

import theory
import ufm

# %% [markdown]
# ## 1. Closed forms
#
# K classes, n samples per class, label smoothing δ, weight decays λ_W = λ_H. The optimal
# logit scale a^δ, and from it p_t (probability of the true class at the optimum) and
# κ = K·p_t, are one call each.

# %%
K, n, lam = 10, 500, 5e-4
print("a^delta      :", theory.a_delta(K=K, n=n, delta=0.1, lam_W=lam, lam_H=lam))
print("kappa = K p_t:", theory.condition_number(K, 0.1, lam, n=n))
print("phase        :", theory.phase(K, n, 0.1, lam, lam))

# %% [markdown]
# Label smoothing lowers p_t and with it κ: the loss landscape at the optimum is better
# conditioned. Past the phase boundary δ* (c ≥ 1) the minimizer is zero and κ is undefined.

# %%
deltas = np.linspace(0.0, 0.3, 31)
kappas = [theory.condition_number(K, d, lam, n=n) for d in deltas]
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(deltas, kappas, marker=".")
ax.set_xlabel("label smoothing δ")
ax.set_ylabel("κ = K·p_t")
ax.set_title(f"Theorem 4.2, K = {K}, n = {n}, λ = {lam:g}")
fig.tight_layout()

# %% [markdown]
# ## 2. Solve the UFM and compare
#
# `ufm.Problem` is the specification; `ufm.solve` runs the compiled solver (default: L-BFGS on
# the exact class-mean reduction); `ufm.compare` puts every predicted number next to the
# measured one. The table's error column is relative (`rel`) or absolute (`abs`), and each
# row is judged against the tolerance (default 1e-6).

# %%
problem = ufm.Problem(K=K, n=n, delta=0.1, lam_W=lam, lam_H=lam, lam_b=lam)
result = ufm.solve(problem)
print(result.message)
comparison = ufm.compare(result)
print(comparison)
assert comparison.ok

# %% [markdown]
# ## 3. Spectra, predicted and measured
#
# Every distinct eigenvalue of the W block of the loss term's Hessian, with its multiplicity,
# from the closed form and from the solver's point.

# %%
predicted = theory.hessian_spectrum(K, n, K, 0.1, lam, lam).W
measured = ufm.block_spectrum(result.params, problem.labels(), problem.weights(), "W")
for value, count in zip(predicted.values, predicted.multiplicities):
    print(f"theory  {value:.10g} x {count}")
values, counts = ufm.distinct_eigenvalues(measured.expanded(), rtol=1e-8)
for value, count in zip(values, counts):
    print(f"solver  {value:.10g} x {count}")

# %% [markdown]
# ## 4. Other losses and non-negative features
#
# Focal loss (Zhou et al.) through the 1-D reduction, and features constrained to H ≥ 0
# (Nguyen et al., Theorem 3.2: an orthogonal frame instead of a simplex ETF).

# %%
for spec in (dict(loss="focal", gamma=2.0), dict(loss="ls", delta=0.1, nonnegative=True)):
    variant = ufm.Problem(K=10, n=50, lam_W=lam, lam_H=lam, lam_b=lam, **spec)
    variant_result = ufm.solve(variant)
    variant_comparison = ufm.compare(variant_result)
    worst = max(row.error for row in variant_comparison.rows if row.applies and row.error is not None)
    print(f"{spec}: {variant_result.method}, {variant_result.status}, worst applicable error {worst:.1e}, "
          f"agrees: {variant_comparison.ok}")
