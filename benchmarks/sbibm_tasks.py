r"""The eight sbibm tasks that run without Julia, as priors and simulators written here.

The simulators and priors follow the definitions of sbibm 1.1 (Lueckmann et al. 2021); the
observations, the reference posterior draws and the fixed inputs of two tasks (the design
matrix and stimulus of the Bernoulli GLM, the distractor mixture and permutation of SLCP with
distractors) are read from the files that ship inside the sbibm package. Nothing of sbibm is
imported: point ``SBIBM_DIR`` (or ``find_sbibm(path)``) at an installed or unpacked ``sbibm``
package directory, e.g. ``pip download sbibm==1.1.0 --no-deps`` and unzip the wheel.

=========================  =====  ======  =============================================
task                       theta  x       prior
=========================  =====  ======  =============================================
gaussian_linear            10     10      N(0, 0.1 I); x ~ N(theta, 0.1 I)
gaussian_linear_uniform    10     10      U(-1, 1)^10; x ~ N(theta, 0.1 I)
slcp                       5      8       U(-3, 3)^5; 4 draws of a 2-D Gaussian
slcp_distractors           5      100     slcp's 8 values + 92 distractors, permuted
bernoulli_glm              10     10      N(0, B^-1); spike count + 9 filtered values
bernoulli_glm_raw          10     100     the same GLM, the 100 binary spikes
gaussian_mixture           2      2       U(-10, 10)^2; x ~ N(theta, I)/2 + N(theta, 0.01 I)/2
two_moons                  2      2       U(-1, 1)^2; the crescent simulator
=========================  =====  ======  =============================================

Each port is checked against sbibm's files by :func:`predictive_pvalue` (the observation is
typical of simulations from the reference posterior draws) and, where sbibm ships two forms
of one observation, by exact equality (:func:`glm_summary` maps the raw spikes onto the
summary observation; the permutation puts SLCP's observation inside the distractor one).
"""

from __future__ import annotations

import bz2
import math
import os
from pathlib import Path

import numpy as np
import pyro.distributions as dist
import torch

DEVELOPMENT = (1, 2, 3, 4, 5)
CONFIRMATION = (6, 7, 8, 9, 10)

_CANDIDATES = (
    "/work/venv-sbibm/lib/python3.11/site-packages/sbibm",
    "/tmp/sbibm_wheel/x/sbibm",
)


def find_sbibm(path: str | os.PathLike | None = None) -> Path:
    """The sbibm package directory that holds ``tasks/<name>/files``.

    Looks at ``path``, then ``$SBIBM_DIR``, then a few local install places; raises
    ``FileNotFoundError`` naming what to do when none holds the files.
    """
    tried = [path, os.environ.get("SBIBM_DIR"), *_CANDIDATES]
    for p in tried:
        if p and (Path(p) / "tasks" / "two_moons" / "files").is_dir():
            return Path(p)
    raise FileNotFoundError(
        "sbibm's task files not found (tried "
        + ", ".join(str(p) for p in tried if p)
        + "): run `pip download sbibm==1.1.0 --no-deps`, unzip the wheel and set SBIBM_DIR "
        "to its sbibm/ folder"
    )


def _csv(path: Path) -> torch.Tensor:
    """A float32 tensor from one of sbibm's csv files (header line, plain or bz2)."""
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt") as f:
        return torch.from_numpy(np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)).float()


class SbibmTask:
    """A prior (a Pyro distribution), a batched simulator ``simulate(theta (n, d)) -> (n, p)``
    and the files of one sbibm task: ``observation(i)`` (p,), ``reference(i)`` (10 000, d),
    ``true_parameters(i)`` (d,), for observations i = 1..10."""

    name: str
    folder: str  # sbibm's folder for the files
    dim: int
    observation_file = "observation.csv"

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = find_sbibm(root)
        self.files = self.root / "tasks" / self.folder / "files"

    def _obs_dir(self, i: int) -> Path:
        if not 1 <= int(i) <= 10:
            raise ValueError(f"sbibm observations are numbered 1 to 10, got {i}")
        return self.files / f"num_observation_{int(i)}"

    def observation(self, i: int) -> torch.Tensor:
        return _csv(self._obs_dir(i) / self.observation_file)[0]

    def reference(self, i: int) -> torch.Tensor:
        return _csv(self._obs_dir(i) / "reference_posterior_samples.csv.bz2")

    def true_parameters(self, i: int) -> torch.Tensor:
        return _csv(self._obs_dir(i) / "true_parameters.csv")[0]

    def sbi_prior(self) -> torch.distributions.Distribution:
        """The prior as sbi takes it (a torch distribution with a vector event)."""
        return self.prior

    def in_support(self, theta: torch.Tensor) -> torch.Tensor:
        """A boolean per draw: inside the prior's support."""
        return torch.isfinite(self.prior.log_prob(theta))


def _box(bound: float, dim: int) -> dist.Distribution:
    return dist.Uniform(-bound * torch.ones(dim), bound * torch.ones(dim)).to_event(1)


class GaussianLinear(SbibmTask):
    name = folder = "gaussian_linear"
    dim = 10

    def __init__(self, root=None):
        super().__init__(root)
        self.prior = dist.MultivariateNormal(torch.zeros(10), 0.1 * torch.eye(10))

    def simulate(self, theta):
        return theta + 0.1**0.5 * torch.randn_like(theta)

    def log_posterior(self, theta: torch.Tensor, x_obs: torch.Tensor) -> torch.Tensor:
        """The exact posterior log-density of ``theta (n, 10)`` given ``x_obs (10,)``, float64:
        N(x / 2, 0.05 I) (conjugate Gaussians)."""
        post = torch.distributions.Normal(x_obs.double() / 2, 0.05**0.5)
        return post.log_prob(theta.double()).sum(-1)


class GaussianLinearUniform(GaussianLinear):
    name = folder = "gaussian_linear_uniform"

    def __init__(self, root=None):
        SbibmTask.__init__(self, root)
        self.prior = _box(1.0, 10)

    def log_posterior(self, theta: torch.Tensor, x_obs: torch.Tensor) -> torch.Tensor:
        """The exact posterior log-density of ``theta (n, 10)`` given ``x_obs (10,)``, float64:
        N(x, 0.1 I) truncated to the box [-1, 1]^10, one truncated normal per coordinate
        (``-inf`` outside the box)."""
        lik = torch.distributions.Normal(x_obs.double(), 0.1**0.5)
        one = torch.ones((), dtype=torch.float64)
        log_mass = (lik.cdf(one) - lik.cdf(-one)).log().sum()
        theta = theta.double()
        inside = (theta.abs() <= 1).all(-1)
        out = lik.log_prob(theta).sum(-1) - log_mass
        return torch.where(inside, out, torch.full_like(out, -math.inf))


class SLCP(SbibmTask):
    name = folder = "slcp"
    dim = 5

    def __init__(self, root=None):
        super().__init__(root)
        self.prior = _box(3.0, 5)

    def simulate(self, theta):
        s1, s2 = theta[:, 2] ** 2, theta[:, 3] ** 2
        rho = torch.tanh(theta[:, 4])
        cov = torch.stack(
            [
                torch.stack([s1**2 + 1e-6, rho * s1 * s2], -1),
                torch.stack([rho * s1 * s2, s2**2 + 1e-6], -1),
            ],
            -2,
        )
        draws = dist.MultivariateNormal(theta[:, :2], cov).sample((4,))  # (4, n, 2)
        return draws.transpose(0, 1).reshape(len(theta), 8)


class SLCPDistractors(SLCP):
    """SLCP's 8 values next to 92 draws of sbibm's fixed Gaussian mixture, in sbibm's fixed
    order (``permutation_idx.torch``)."""

    name = "slcp_distractors"
    observation_file = "observation_distractors.csv"

    def __init__(self, root=None):
        super().__init__(root)
        self.noise = torch.load(self.files / "gmm.torch", weights_only=False)
        self.permutation = torch.load(self.files / "permutation_idx.torch", weights_only=False)

    def simulate(self, theta):
        noise = self.noise.sample((len(theta),)).float()
        return torch.cat([super().simulate(theta), noise], 1)[:, self.permutation]


def glm_summary(spikes: torch.Tensor, stimulus: torch.Tensor) -> torch.Tensor:
    """The Bernoulli GLM's summary: spike count and the last 9 values of the spike train
    correlated with the stimulus (padding 8), (n, 100) -> (n, 10)."""
    sta = torch.nn.functional.conv1d(spikes[:, None, :], stimulus.reshape(1, 1, -1), padding=8)
    return torch.cat([spikes.sum(1, keepdim=True), sta[:, 0, -9:]], 1)


class BernoulliGLM(SbibmTask):
    name = folder = "bernoulli_glm"
    dim = 10
    raw = False

    def __init__(self, root=None):
        super().__init__(root)
        m = 9
        d = torch.eye(m) - torch.diag(torch.ones(m - 1), -1)
        f = d @ d + torch.diag(torch.arange(m) / m) ** 0.5
        precision = torch.zeros(10, 10)
        precision[0, 0] = 0.5
        precision[1:, 1:] = f.T @ f
        self.prior = dist.MultivariateNormal(torch.zeros(10), precision_matrix=precision)
        self.design = torch.load(self.files / "design_matrix.pt", weights_only=False).float()
        self.stimulus = torch.load(self.files / "stimulus_I.pt", weights_only=False).float()

    def spikes(self, theta):
        rate = torch.sigmoid(theta @ self.design.T)  # (n, 100)
        return (torch.rand_like(rate) < rate).float()

    def simulate(self, theta):
        y = self.spikes(theta)
        return y if self.raw else glm_summary(y, self.stimulus)


class BernoulliGLMRaw(BernoulliGLM):
    name = "bernoulli_glm_raw"
    raw = True
    observation_file = "observation_raw.csv"


class GaussianMixture(SbibmTask):
    name = folder = "gaussian_mixture"
    dim = 2

    def __init__(self, root=None):
        super().__init__(root)
        self.prior = _box(10.0, 2)

    def simulate(self, theta):
        scale = torch.where(torch.rand(len(theta), 1) < 0.5, 1.0, 0.1)
        return theta + scale * torch.randn_like(theta)


class TwoMoons(SbibmTask):
    name = folder = "two_moons"
    dim = 2

    def __init__(self, root=None):
        super().__init__(root)
        self.prior = _box(1.0, 2)

    def simulate(self, theta):
        n = len(theta)
        a = (torch.rand(n) - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(n)
        p = torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], -1)
        t1, t2 = theta[:, 0], theta[:, 1]
        return p + torch.stack([-(t1 + t2).abs(), t2 - t1], -1) / math.sqrt(2)


TASKS = {
    t.name: t
    for t in (
        GaussianLinear,
        GaussianLinearUniform,
        SLCP,
        SLCPDistractors,
        BernoulliGLM,
        BernoulliGLMRaw,
        GaussianMixture,
        TwoMoons,
    )
}


def predictive_pvalue(task: SbibmTask, i: int, n: int = 2000, seed: int = 0) -> float:
    """How typical observation ``i`` is of simulations from its reference posterior draws.

    Simulates once from each of ``n`` reference draws, standardises by the simulations' mean
    and covariance (ridge 1e-6 of the trace), and returns the fraction of a second set of
    ``n`` simulations whose Mahalanobis distance is at least the observation's. A correct
    port gives values spread over (0, 1), mostly high (the posterior predictive is centred
    near the observation). It catches gross errors only: two moons with its crescent shifted
    by 0.3 gives values near 0, but gaussian_linear with ``x = 0.5 theta + noise`` in place of
    ``theta + noise`` gives 0.16-0.31 on observations 1-3 (n = 500).
    """
    torch.manual_seed(seed)
    ref = task.reference(i)
    idx = torch.randperm(len(ref))[: 2 * n]
    sims = task.simulate(ref[idx]).double()
    fit, held = sims[:n], sims[n:]
    mean = fit.mean(0)
    cov = torch.cov(fit.T).reshape(fit.shape[1], fit.shape[1])
    cov = cov + 1e-6 * cov.trace() / len(cov) * torch.eye(len(cov), dtype=cov.dtype)
    chol = torch.linalg.cholesky(cov)

    def dist2(z):
        w = torch.linalg.solve_triangular(chol, (z - mean).T, upper=False)
        return (w**2).sum(0)

    d_obs = dist2(task.observation(i).double()[None])
    return float((dist2(held) >= d_obs).double().mean())
