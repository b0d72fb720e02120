"""The law of the purified output against closed forms, with data distributed N(mu, s^2 I).

Setting (per coordinate; the coordinates are independent). Data x_0 ~ N(mu, s^2); at time t the
forward process gives x_t = a x_0 + sigma z with a = sqrt(alpha_bar(t)), sigma^2 = 1 - alpha_bar(t),
so x_t ~ N(a mu, v) with v = a^2 s^2 + sigma^2.

Exact noise predictor. eps*(x_t, t) = E[z | x_t] = -sigma * d/dx log p_t(x_t) = sigma (x_t - a mu) / v.
Used as the backbone (float64), every purifier runs its reverse process with the exact score.

Posterior. p(x_0 | x_t) has precision 1/s^2 + a^2/sigma^2 = v / (s^2 sigma^2), so
    p(x_0 | x_t) = N(mu + (a s^2 / v)(x_t - a mu),  s^2 sigma^2 / v).

Purifying a fixed input x (not a data sample): x_t* = a x + sigma z, then the exact reverse process
samples p(x_0 | x_t*). Marginalising z,
    E[out]   = mu + (a^2 s^2 / v)(x - mu)                        (shrinks x - mu by a^2 s^2 / v)
    Var[out] = (a s^2 / v)^2 sigma^2 + s^2 sigma^2 / v.
For ``diffpure_ddpm`` a, sigma are those of the discrete alpha_bar_{n-1}, n = round(T t*): the chain
starts at 0-indexed step n - 1, and its predictor is the exact one of the discrete step i that
the backbone is called at (t = (i + 1) / T).

Probability-flow ODE. Deterministic after the diffusion; the flow is affine and monotone, so it is
the monotone transport of N(a mu, v) onto N(mu, s^2):
    x_0 = mu + s (x_t* - a mu) / sqrt(v),
hence E[out] = mu + (a s / sqrt(v))(x - mu) and Var[out] = s^2 sigma^2 / v.

Three computations per purifier:
1. Closed form (above): the ideal law.
2. Chain law: the solver's discrete chain is linear-Gaussian (each step is x' = A x + c + std * z,
   since eps* is affine in x), so its exact output law follows by recursion in float64, written
   here from the documented schemes, independently of the package code. Its distance from (1) is
   the solver's discretization error, which the allowances below bound (measured values quoted).
3. The implementation: (a) its exact law, read off one batched call whose noise source feeds a
   unit draw to one key per batch row (the output is affine in the draws), must equal (2) to
   float64 rounding; (b) Monte Carlo with ``SeededNoise``: N copies of a fixed 1x4x4 input must
   match (1) and (2) within stated Monte Carlo bounds (5 standard errors) plus the allowance.

Monte Carlo bounds (N copies, D = 16 coordinates, true variance V):
- per-coordinate mean:  |mean_hat - mean| <= 5 sqrt(V / N) + allowance,
- fitted shrinkage slope (least squares of mean_hat on x over the D coordinates):
  |slope_hat - slope| <= 5 sqrt(V / (N Sxx)) + allowance, Sxx = sum (x_j - x_bar)^2,
- variance pooled over coordinates: |V_hat / V - 1| <= 5 sqrt(2 / (D (N - 1))) + allowance.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch

from advpure.diffusion.schedule import DiscreteSchedule, VPSchedule
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.diffpure_ddpm import DiffPureDDPM
from advpure.purifiers.diffpure_ode import DiffPureODE
from advpure.purifiers.noise import NoiseSource, NoiseTape, SeededNoise

MU, S = 0.2, 0.5  # data N(MU, S^2 I)
BETA_MIN, BETA_MAX = 0.1, 20.0  # VP-SDE
BETA_START, BETA_END, T = 1e-4, 0.02, 1000  # DDPM
DT = 1e-3  # published solver step
N_COPIES = 16384
Z_BOUND = 5.0  # Monte Carlo bounds are 5 standard errors
# The fixed input: a 1x4x4 pattern in [-0.8, 0.8], away from MU, so the mean checks the shrinkage.
X = torch.linspace(-0.8, 0.8, 16, dtype=torch.float64).view(1, 1, 4, 4)
D = X.numel()


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """The tensors here are small: intra-op threads only add overhead (and stall under a loaded CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ reference schedules


def alpha_bar_vp(t: float) -> float:
    """alpha_bar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2)."""
    return math.exp(-BETA_MIN * t - 0.5 * (BETA_MAX - BETA_MIN) * t * t)


def beta_vp(t: float) -> float:
    return BETA_MIN + t * (BETA_MAX - BETA_MIN)


def alpha_bars_ddpm() -> list[float]:
    """0-indexed alpha_bar_i = prod_{j <= i} (1 - beta_j), beta_j linear from beta_start to beta_end."""
    out, product = [], 1.0
    for j in range(T):
        product *= 1.0 - (BETA_START + (BETA_END - BETA_START) * j / (T - 1))
        out.append(product)
    return out


ALPHA_BARS_DDPM = alpha_bars_ddpm()


# ------------------------------------------------------------------------------ exact predictors


def eps_star(x: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """sigma (x - a mu) / v, alpha_bar broadcast per batch row."""
    ab = alpha_bar.view(-1, *[1] * (x.ndim - 1))
    return torch.sqrt(1.0 - ab) * (x - torch.sqrt(ab) * MU) / (ab * S**2 + 1.0 - ab)


def vp_backbone(t_star: float):
    """Exact predictor on the continuous VP schedule; checks it is only called at times in (0, t*]."""

    def backbone(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],) and t.dtype == torch.float64
        assert bool(((t > 0) & (t <= t_star + 1e-12)).all())
        log_ab = -BETA_MIN * t - 0.5 * (BETA_MAX - BETA_MIN) * t**2
        return eps_star(x, torch.exp(log_ab))

    return backbone


def ddpm_backbone(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact predictor of the discrete step i the backbone is called at: t = (i + 1) / T."""
    i = torch.round(t * T).long() - 1
    assert bool((i >= 0).all()), "called at t = 0"
    assert torch.allclose(t * T, (i + 1).to(t.dtype), rtol=0.0, atol=1e-9), "called off the step grid"
    return eps_star(x, torch.tensor(ALPHA_BARS_DDPM, dtype=x.dtype)[i])


# ------------------------------------------------------------------------------ laws


@dataclass
class Law:
    """Output law per coordinate of input x: mean = intercept + slope * x, variance var (all coordinates)."""

    intercept: float
    slope: float
    var: float

    def mean(self, x: torch.Tensor = X) -> torch.Tensor:
        return (self.intercept + self.slope * x).flatten()


def posterior_law(alpha_bar: float) -> Law:
    """Closed form for the SDE and the DDPM: diffuse x to alpha_bar, sample p(x_0 | x_t)."""
    a, sigma2 = math.sqrt(alpha_bar), 1.0 - alpha_bar
    v = alpha_bar * S**2 + sigma2
    shrink = alpha_bar * S**2 / v
    return Law(MU * (1.0 - shrink), shrink, (a * S**2 / v) ** 2 * sigma2 + S**2 * sigma2 / v)


def transport(x_t: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The probability-flow ODE's closed-form map x_t* -> x_0 = mu + s (x_t* - a mu) / sqrt(v)."""
    a = math.sqrt(alpha_bar)
    return MU + S * (x_t - a * MU) / math.sqrt(alpha_bar * S**2 + 1.0 - alpha_bar)


def transport_law(alpha_bar: float) -> Law:
    a, sigma2 = math.sqrt(alpha_bar), 1.0 - alpha_bar
    v = alpha_bar * S**2 + sigma2
    slope = a * S / math.sqrt(v)
    return Law(MU * (1.0 - slope), slope, S**2 * sigma2 / v)


class _Chain:
    """Affine-Gaussian state x = slope * input + intercept + N(0, var), advanced step by step."""

    def __init__(self, alpha_bar: float) -> None:
        self.slope, self.intercept, self.var = math.sqrt(alpha_bar), 0.0, 1.0 - alpha_bar

    def step(self, a: float, c: float, noise_var: float) -> None:
        """x' = a x + c + sqrt(noise_var) z."""
        self.slope, self.intercept, self.var = a * self.slope, a * self.intercept + c, a * a * self.var + noise_var

    def law(self) -> Law:
        return Law(self.intercept, self.slope, self.var)


def _vp_velocity(t: float) -> tuple[float, float, float]:
    """(k, m, beta) at time t, such that beta eps*(x, t) / sigma(t) = beta (x - a mu) / v = k x - m."""
    ab = alpha_bar_vp(t)
    v = ab * S**2 + 1.0 - ab
    beta = beta_vp(t)
    return beta / v, beta * math.sqrt(ab) * MU / v, beta


def sde_chain_law(t_star: float, dt: float) -> Law:
    """Euler-Maruyama: x <- x + h [beta x / 2 - beta eps / sigma] + sqrt(beta h) z at t = t* - i h."""
    n = max(1, round(t_star / dt))
    h = t_star / n
    chain = _Chain(alpha_bar_vp(t_star))
    for i in range(n):
        k, m, beta = _vp_velocity(t_star - i * h)  # beta eps / sigma = k x - m
        chain.step(1.0 + h * (0.5 * beta - k), h * m, beta * h)
    return chain.law()


def ode_chain_law(t_star: float, dt: float, method: str) -> Law:
    """Velocity 0.5 beta (x - eps / sigma); Euler or Heun, Heun's last step is Euler."""
    n = max(1, round(t_star / dt))
    h = t_star / n

    def velocity(t: float) -> tuple[float, float]:  # (p, q): the velocity is p x + q
        k, m, beta = _vp_velocity(t)
        return 0.5 * (beta - k), 0.5 * m

    chain = _Chain(alpha_bar_vp(t_star))
    for i in range(n):
        t = t_star - i * h
        k1, m1 = velocity(t)
        if method == "euler" or i == n - 1:
            chain.step(1.0 + h * k1, h * m1, 0.0)
        else:
            k2, m2 = velocity(t - h)  # at the Euler predictor x + h (k1 x + m1)
            chain.step(1.0 + 0.5 * h * (k1 + k2 * (1.0 + h * k1)), 0.5 * h * (m1 + k2 * h * m1 + m2), 0.0)
    return chain.law()


def ddpm_chain_law(t_star: float, variance: str, stride: int = 1) -> Law:
    """Ancestral chain from step n - 1 over n - 1, n - 1 - stride, ..., then x_0 (alpha_bar = 1):
    x' = (x - b / sqrt(1 - ab_s) eps*) / sqrt(ab_s / ab_s') + sqrt(var) z, b = 1 - ab_s / ab_s',
    var = b (1 - ab_s') / (1 - ab_s) (posterior) or b (beta); no noise on the last step."""
    n = round(T * t_star)
    visited = list(range(n - 1, -1, -stride))
    chain = _Chain(ALPHA_BARS_DDPM[n - 1])
    for position, s in enumerate(visited):
        ab = ALPHA_BARS_DDPM[s]
        ab_next = ALPHA_BARS_DDPM[visited[position + 1]] if position + 1 < len(visited) else 1.0
        ratio = ab / ab_next
        b = 1.0 - ratio
        v = ab * S**2 + 1.0 - ab
        # eps* = sqrt(1 - ab) (x - sqrt(ab) mu) / v, so b / sqrt(1 - ab) eps* = b (x - sqrt(ab) mu) / v
        a = (1.0 - b / v) / math.sqrt(ratio)
        c = b * math.sqrt(ab) * MU / v / math.sqrt(ratio)
        noise_var = b * (1.0 - ab_next) / (1.0 - ab) if variance == "posterior" else b
        chain.step(a, c, 0.0 if position == len(visited) - 1 else noise_var)
    return chain.law()


# ------------------------------------------------------------------------------ the implementation


class _Impulses(NoiseSource):
    """Batch row k gets a unit draw for key k and zeros for every other key; the last row gets none."""

    def normal(self, key: int, like: torch.Tensor) -> torch.Tensor:
        assert key < like.shape[0] - 1, "batch too small for the number of noise keys"
        draw = torch.zeros_like(like)
        draw[key] = 1.0
        return draw


def implementation_law(purifier) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (mean, variance) per coordinate of ``purify_signed(X)``: the output is affine in the
    draws, so the zero-noise row is the mean and row k minus it is the coefficient of draw k; with
    independent standard-normal draws (what the Monte Carlo checks) the variance is the sum of squares."""
    batch = X.expand(purifier.n_steps + 2, -1, -1, -1).clone()
    with torch.no_grad():
        out = purifier.purify_signed(batch, _Impulses()).flatten(1)
    mean = out[-1]
    return mean, ((out[:-1] - mean) ** 2).sum(0)


def monte_carlo(purifier, seed: int = 0, n: int = N_COPIES) -> torch.Tensor:
    """(n, D) purified copies of X, model space, unclamped."""
    with torch.no_grad():
        return purifier.purify_signed(X.expand(n, -1, -1, -1).clone(), SeededNoise(seed)).flatten(1)


def assert_matches(samples: torch.Tensor, law: Law, mean_allowance: float, var_allowance: float) -> None:
    """Monte Carlo bounds of the module docstring (5 standard errors) plus the stated allowances
    (mean_allowance absolute on each coordinate's mean and on the slope, var_allowance relative)."""
    n = samples.shape[0]
    mean_hat = samples.mean(0)
    mean_se = math.sqrt(law.var / n)
    mean_err = (mean_hat - law.mean()).abs().max().item()
    assert mean_err <= Z_BOUND * mean_se + mean_allowance, f"mean off by {mean_err:.3g} (se {mean_se:.3g})"
    xc = X.flatten() - X.mean()
    sxx = float((xc**2).sum())
    slope_hat = float((xc * mean_hat).sum()) / sxx
    slope_se = math.sqrt(law.var / (n * sxx))
    slope_err = abs(slope_hat - law.slope)
    assert slope_err <= Z_BOUND * slope_se + mean_allowance, f"slope {slope_hat:.5f} vs {law.slope:.5f}"
    var_hat = float(samples.var(0).mean())
    var_se = math.sqrt(2.0 / (D * (n - 1)))
    var_err = abs(var_hat / law.var - 1.0)
    assert var_err <= Z_BOUND * var_se + var_allowance, f"variance {var_hat:.5f} vs {law.var:.5f} (rel se {var_se:.3g})"


def assert_law_close(chain: Law, ideal: Law, mean_allowance: float, var_allowance: float) -> None:
    """The discretized chain's exact law is within the allowances of the ideal one."""
    mean_err = (chain.mean() - ideal.mean()).abs().max().item()
    assert mean_err <= mean_allowance, f"chain mean off by {mean_err:.3g}"
    assert abs(chain.slope - ideal.slope) <= mean_allowance
    assert abs(chain.var / ideal.var - 1.0) <= var_allowance, f"chain variance off by {chain.var / ideal.var - 1:.3g}"


def assert_implements(purifier, chain: Law) -> None:
    """The implementation's exact law equals the independently computed chain law (float64 rounding)."""
    mean, var = implementation_law(purifier)
    torch.testing.assert_close(mean, chain.mean(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var, torch.full_like(var, chain.var), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ tests


def test_reference_schedules_and_exact_predictor():
    """The test's own schedules agree with the package's, and eps* is E[z | x_t] (least squares of
    z on x_t over 10^6 draws: slope sigma / v, intercept -sigma a mu / v, within 5 standard errors)."""
    ts = torch.tensor([0.01, 0.1, 0.3, 1.0], dtype=torch.float64)
    ours = torch.tensor([alpha_bar_vp(float(t)) for t in ts], dtype=torch.float64)
    torch.testing.assert_close(VPSchedule(BETA_MIN, BETA_MAX).alpha_bar(ts), ours, rtol=1e-12, atol=0.0)
    discrete = DiscreteSchedule(BETA_START, BETA_END, T).alpha_bars
    torch.testing.assert_close(discrete, torch.tensor(ALPHA_BARS_DDPM, dtype=torch.float64), rtol=1e-12, atol=0.0)

    generator = torch.Generator().manual_seed(0)
    n, ab = 1_000_000, alpha_bar_vp(0.3)
    x0 = MU + S * torch.randn(n, generator=generator, dtype=torch.float64)
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    x_t = math.sqrt(ab) * x0 + math.sqrt(1.0 - ab) * z
    slope = float(torch.cov(torch.stack([x_t, z]))[0, 1] / x_t.var())
    intercept = float(z.mean() - slope * x_t.mean())
    residual_sd = float((z - intercept - slope * x_t).std())
    v = ab * S**2 + 1.0 - ab
    eps = eps_star(torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([ab], dtype=torch.float64))
    assert float(eps[1] - eps[0]) == pytest.approx(math.sqrt(1.0 - ab) / v, rel=1e-12)
    assert abs(slope - float(eps[1] - eps[0])) <= Z_BOUND * residual_sd / math.sqrt(n * v)
    intercept_se = residual_sd * math.sqrt((1.0 + (math.sqrt(ab) * MU) ** 2 / v) / n)
    assert abs(intercept - float(eps[0])) <= Z_BOUND * intercept_se


# Euler-Maruyama with dt = 1e-3 has O(dt) weak error. Measured chain - closed form:
# t* = 0.1: means up to 2.2e-3 (slope -2.1e-3, intercept +5e-4), variance +0.34 %;
# t* = 0.3: means up to 1.1e-3 (slope -9e-4, intercept +3e-4), variance +0.12 %.
# Allowances: 3e-3 on the means and the slope, 0.5 % on the variance.
SDE_MEAN_ALLOWANCE, SDE_VAR_ALLOWANCE = 3e-3, 5e-3


@pytest.mark.parametrize("t_star", [0.1, 0.3])
def test_diffpure_samples_the_posterior_closed_form(t_star):
    purifier = DiffPure(vp_backbone(t_star), t_star=t_star, dt=DT, beta_min=BETA_MIN, beta_max=BETA_MAX)
    ideal = posterior_law(alpha_bar_vp(t_star))
    chain = sde_chain_law(t_star, DT)
    assert_law_close(chain, ideal, SDE_MEAN_ALLOWANCE, SDE_VAR_ALLOWANCE)
    assert_implements(purifier, chain)
    samples = monte_carlo(purifier)
    assert_matches(samples, chain, 0.0, 0.0)
    assert_matches(samples, ideal, SDE_MEAN_ALLOWANCE, SDE_VAR_ALLOWANCE)


# The ancestral chain's mean is exact for Gaussian data (measured |chain - closed form| < 1e-14); its
# variance is not: 1000 steps of a fixed per-step variance only approximate the reverse process.
# Measured chain variance / posterior variance - 1: posterior (beta tilde) -2.27 % (t* = 0.1),
# -1.57 % (t* = 0.3); beta +0.11 % (0.1), +0.29 % (0.3). (beta tilde is exact as s -> 0, beta as
# s -> 1; s = 0.5 lies between, closer to beta.) Allowances: 1e-9 on means, 2.5 % / 0.5 % on variances.
DDPM_MEAN_ALLOWANCE = 1e-9
DDPM_VAR_ALLOWANCE = {"posterior": 0.025, "beta": 0.005}


@pytest.mark.parametrize("variance", ["posterior", "beta"])
@pytest.mark.parametrize("t_star", [0.1, 0.3])
def test_diffpure_ddpm_samples_the_posterior_closed_form(t_star, variance):
    purifier = DiffPureDDPM(ddpm_backbone, t_star=t_star, variance=variance, beta_start=BETA_START, beta_end=BETA_END)
    ideal = posterior_law(ALPHA_BARS_DDPM[round(T * t_star) - 1])
    chain = ddpm_chain_law(t_star, variance)
    assert_law_close(chain, ideal, DDPM_MEAN_ALLOWANCE, DDPM_VAR_ALLOWANCE[variance])
    assert_implements(purifier, chain)
    samples = monte_carlo(purifier)
    assert_matches(samples, chain, 0.0, 0.0)
    assert_matches(samples, ideal, DDPM_MEAN_ALLOWANCE, DDPM_VAR_ALLOWANCE[variance])


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_respaced_ddpm_follows_its_chain_law(variance):
    """stride 10 (30 steps from t* = 0.3): the chain law is further from the posterior (variance
    -12.5 % for beta tilde, +2.5 % for beta), and the implementation must follow that chain."""
    purifier = DiffPureDDPM(ddpm_backbone, t_star=0.3, stride=10, variance=variance)
    chain = ddpm_chain_law(0.3, variance, stride=10)
    assert_implements(purifier, chain)
    assert_matches(monte_carlo(purifier), chain, 0.0, 0.0)


# Probability-flow ODE at t* = 0.3, dt = 1e-3. The solved map x_t* -> x_0 is affine, so its error
# against the transport is (slope error) x_t* + (intercept error). Measured: Euler (first order)
# -6.2e-4 x_t* + 2.4e-4; Heun (second order, its last step is Euler) -6.9e-6 x_t* + 1.6e-6.
# Allowance per sample: 1e-3 |x_t*| + 5e-4 (Euler), 1e-5 |x_t*| + 3e-6 (Heun). On the output law
# (measured: means 5.5e-4 / 5.1e-6, variance -0.21 % / -2.3e-5): 1e-3 / 1e-5 on the means and the
# slope, 4e-3 / 5e-5 relative on the variance.
ODE_SAMPLE_ALLOWANCE = {"euler": (1e-3, 5e-4), "heun": (1e-5, 3e-6)}
ODE_LAW_ALLOWANCE = {"euler": (1e-3, 4e-3), "heun": (1e-5, 5e-5)}


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_diffpure_ode_is_the_closed_form_transport(method):
    t_star = 0.3
    ab = alpha_bar_vp(t_star)
    purifier = DiffPureODE(vp_backbone(t_star), t_star=t_star, dt=DT, method=method)
    ideal, chain = transport_law(ab), ode_chain_law(t_star, DT, method)
    assert_law_close(chain, ideal, *ODE_LAW_ALLOWANCE[method])
    assert_implements(purifier, chain)

    tape = NoiseTape(SeededNoise(1))
    batch = X.expand(N_COPIES, -1, -1, -1).clone()
    with torch.no_grad():
        out = purifier.purify_signed(batch, tape)
    assert sorted(tape.draws) == [0], "the ODE draws only the diffusion noise"
    x_t = math.sqrt(ab) * batch + math.sqrt(1.0 - ab) * tape.draws[0]
    per_x_t, constant = ODE_SAMPLE_ALLOWANCE[method]
    excess = (out - transport(x_t, ab)).abs() - (per_x_t * x_t.abs() + constant)
    assert float(excess.max()) <= 0.0, f"{method}: a sample is off the transport by {float(excess.max()):.3g} too much"
    assert_matches(out.flatten(1), ideal, *ODE_LAW_ALLOWANCE[method])


def test_ode_error_shrinks_at_the_solver_order():
    """Halving dt halves Euler's error and quarters Heun's, so the solvers converge to the transport."""
    t_star = 0.3
    ab = alpha_bar_vp(t_star)
    batch = X.expand(64, -1, -1, -1).clone()
    noise = SeededNoise(2)
    x_t = math.sqrt(ab) * batch + math.sqrt(1.0 - ab) * noise.normal(0, batch)
    for method, order in [("euler", 1), ("heun", 2)]:
        errors = []
        for dt in (2e-3, 1e-3, 5e-4):
            purifier = DiffPureODE(vp_backbone(t_star), t_star=t_star, dt=dt, method=method)
            with torch.no_grad():
                errors.append((purifier.purify_signed(batch, noise) - transport(x_t, ab)).abs().max().item())
        for coarse, fine in itertools.pairwise(errors):
            assert coarse / fine == pytest.approx(2.0**order, rel=0.05), f"{method}: errors {errors}"
