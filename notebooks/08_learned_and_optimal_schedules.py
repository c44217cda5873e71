# %% [markdown]
# # 08 — Learned and theory-optimal guidance schedules, judged against the exact target
#
# **Claim.** (a) With exact scores, Learn to Guide (Galashov et al. 2025; one-step energy-distance
# self-consistency, docs/theory.md eq. 46) learns no guidance: omega_phi stays at 0 on every step.
# (b) With an under-trained conditional model (means shrunk 30 % toward the data mean and 30 % of
# the unconditional model mixed in) the learned weight is positive and lowers the energy distance
# to the true conditional below the best constant weight and the best weight on the published
# limited interval. (c) In the exponential regime (K = e^{alpha d}, alpha = 0.1), the schedule
# that minimises the mean-field distortion at a required mean ratio (eq. 47) beats constant,
# limited-interval and TV-CFG guidance on the prediction, and simulation at d = 64 confirms the
# ranking: at the same separability it keeps the within-class variance.
#
# **Finding.** The one-step loss is myopic: schedules tuned end to end on the final energy
# distance (step-down, the interval at its best window, the negative window) beat the learned
# weight on the degraded model, because the bias of the late steps cannot be undone with
# omega >= 0 and is best compensated by over-guiding early.

# %%

import numpy as np

import cfgphase as cp

QUICK, OUT = cp.figures.data.notebook_mode()

# %%
data = cp.figures.data.schedule_design(quick=QUICK)
data.save(OUT / "08_schedule_design.h5")
cp.plot(data, out=OUT / "08_schedule_design", overwrite=True)
print(cp.figures.data.design_table(data))
print({k: data.params[k] for k in ("tuned_amplitudes", "oracle_window", "learned_exact_max", "learned_degraded_mean")})

# %% [markdown]
# **Check.** (a) The largest learned weight with exact scores is at most 0.1, and the learned
# schedule's samples are the unguided ones (energy distance within 3 standard errors of "none").
# (b) The mean learned weight on the degraded model exceeds 0.5, and its energy distance is below
# the tuned constant's and the tuned published interval's by more than 3 combined standard errors.
# (c) Theory-optimal: orthogonal variance above constant, interval and TV-CFG by more than 3
# combined standard errors, mean ratio within 0.02 of the target. The finding: some end-to-end
# tuned schedule beats the learned one by more than 3 combined standard errors.

# %%
rows = {(s, n): i for i, (s, n) in enumerate(zip(data["setting"], data["schedule"]))}


def value(setting, name, key):
    i = rows[(setting, name)]
    return data[key][i], data[key + "_err"][i]


def below(setting, low, high, key):
    """value(low) < value(high) by more than 3 combined standard errors."""
    (a, ea), (b, eb) = value(setting, low, key), value(setting, high, key)
    return b - a > 3 * np.hypot(ea, eb)


assert data.params["learned_exact_max"] <= 0.1
(ed_l, e_l), (ed_0, e_0) = value("exact", "learned", "energy_distance"), value("exact", "none", "energy_distance")
assert abs(ed_l - ed_0) <= 3 * np.hypot(e_l, e_0) + 1e-12
assert data.params["learned_degraded_mean"] > 0.5
assert below("degraded", "learned", "constant", "energy_distance")
assert below("degraded", "learned", "interval", "energy_distance")
for name in ("constant", "interval", "tvcfg"):
    assert below("exact", name, "theory-optimal", "var_perp"), name
assert abs(value("exact", "theory-optimal", "mean_ratio")[0] - data.params["target"]) < 0.02
assert any(below("degraded", name, "learned", "energy_distance")
           for name in ("step-down", "interval (oracle window)", "negative window"))
print("claim holds")
