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
#    minimizer (Theorem 4.1), the predicted probabilities p_t (of the true class) and p_n
#    (of each other class) and the condition number κ = K·p_t of the Hessian's loss blocks,
#    the largest over the smallest non-zero eigenvalue (Theorem 4.2);
# 2. `ufm`: a JAX solver for the same model, whose solution is held against the theory
#    number by number.
#
# It is executed by the test suite (`tests/test_examples.py`), so every output below is
# what the code gives today. The source is `examples/tutorial.py` (jupytext percent format);
# `jupytext --to ipynb examples/tutorial.py` makes the notebook. The symbols are those of
# `docs/theory.md` (its glossary lists them all).

# %%
# %matplotlib inline
import jax

jax.config.update("jax_enable_x64", True)  # float64: the comparisons below are at 1e-6 and finer

import matplotlib.pyplot as plt
import numpy as np

import theory
import ufm

# %% [markdown]
# ## 1. Closed forms
#
# K classes, n samples per class (N = nK samples), label smoothing δ, weight decays λ_W = λ_H.
# Everything depends on them through one number, c = sqrt(KN)·λ_Z + δ with λ_Z = sqrt(λ_W λ_H):
# the minimizer is non-zero exactly when c < 1, and the smoothing where c = 1 is the phase
# boundary δ*. The optimal logit scale a^δ, and from it p_t (probability of the true class at
# the optimum) and κ = K·p_t, are one call each.

# %%
K, n, lam = 10, 500, 5e-4
print("a^delta      :", theory.a_delta(K=K, n=n, delta=0.1, lam_W=lam, lam_H=lam))
print("kappa = K p_t:", theory.condition_number(K, 0.1, lam, n=n))
print("phase        :", theory.phase(K, n, delta=0.1, lam_W=lam, lam_H=lam))

# %% [markdown]
# Label smoothing lowers p_t and with it κ: the loss landscape at the optimum is better
# conditioned. Past the phase boundary δ* (c ≥ 1) the minimizer is zero and κ is undefined.
# The figure is drawn inline (the `%matplotlib inline` line above).

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
# row is judged against the tolerance (default 1e-6). Its rows: the mean norms of the
# classifiers w_k and of the centred class means hbar_k − h_G (h_G the mean of all features), the
# class-mean logits, p_t and p_n, NC1–NC3 (within-class variability, distance from a simplex
# ETF, classifier vs class-mean mismatch: 0 at collapse), the bias, and for the W and H blocks of
# the loss term's Hessian ("loss block": without the weight decay) κ and all eigenvalues with their
# multiplicities (the largest shown). Numbers have 10 significant digits.

# %%
problem = ufm.Problem(K=K, n=n, delta=0.1, lam_W=lam, lam_H=lam, lam_b=lam)
result = ufm.solve(problem)
print(result.message)
comparison = ufm.compare(result)
print(comparison)
assert comparison.ok

# %% [markdown]
# Each row also has a key, for reading it from code (`comparison.keys()` lists them), and
# `to_records()` gives plain dicts, ready for `pandas.DataFrame`.

# %%
print("kappa_W measured:", comparison["kappa_W"].measured, " theory:", comparison["kappa_W"].theory)
print(comparison.keys())
print(comparison.to_records()[0])

# %% [markdown]
# ## 3. Spectra, predicted and measured
#
# Every distinct eigenvalue of the W block of the loss term's Hessian, with its multiplicity,
# from the closed form and from the solver's point.

# %%
predicted = theory.hessian_spectrum(K, n, K, delta=0.1, lam_W=lam, lam_H=lam).W
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
    print(
        f"{spec}: {variant_result.method}, {variant_result.status}, worst applicable error {worst:.1e}, "
        f"agrees: {variant_comparison.ok}"
    )
