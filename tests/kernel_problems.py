"""Small synthetic problems for the kernel tests: images, PSFs, pixels around one source."""
import numpy as np

from kernels import params as P
from kernels.inputs import N_IMG_COLS, make_prior, make_problem, prior_from_arrays
from kernels.profiles import prototype_array


def random_params(rng, star=None):
    """Plausible unconstrained parameters (27,); ``star`` True/False fixes logit q(star) at +-4."""
    x = np.zeros(P.N_PARAMS)
    x[P.U_EAST:P.U_NORTH + 1] = rng.normal(0, 0.3, 2)
    x[P.A_STAR] = rng.normal(0, 1) if star is None else (4.0 if star else -4.0)
    for t in range(2):
        x[P.R_MEAN[t]] = np.log(rng.uniform(3, 30))
        x[P.R_LOGVAR[t]] = np.log(rng.uniform(0.001, 0.05))
        x[P.C_MEAN[t]:P.C_MEAN[t] + 4] = rng.normal(0.3, 0.3, 4)
        x[P.C_LOGVAR[t]:P.C_LOGVAR[t] + 4] = np.log(rng.uniform(0.001, 0.05, 4))
    x[P.E_DEV] = rng.normal(0, 1)
    x[P.E_AXIS] = rng.normal(0.5, 0.5)
    x[P.E_ANGLE] = rng.uniform(0, np.pi)
    x[P.E_SCALE] = np.log(rng.uniform(0.8, 2.5))
    return x


def synthetic_problem(rng, bands=(0, 2, 4), half=8, K=2, neighbours=True):
    """Images of size (2 half + 1)^2 around a source anchored near the centre.

    Returns a :class:`kernels.inputs.Problem` (pix, img, psf, proto), with random PSF mixtures
    of K components, the package's galaxy prototypes and, with ``neighbours``, random
    neighbour light in the background columns.
    """
    n_img = len(bands)
    img = np.zeros((n_img, N_IMG_COLS))
    psf = np.zeros((n_img, K, 6))
    rows = []
    for n, b in enumerate(bands):
        ang = rng.uniform(0, 2 * np.pi)
        scale = 1 / 0.396
        flip = -1.0
        c, s = np.cos(ang), np.sin(ang)
        Jm = scale * np.array([[c * flip, -s], [s * flip, c]])
        img[n] = [b, half + rng.uniform(-0.5, 0.5), half + rng.uniform(-0.5, 0.5), *Jm.ravel()]
        w = rng.dirichlet(np.ones(K) * 3)
        for k in range(K):
            sx, sy = rng.uniform(0.9, 2.0, 2)
            rho = rng.uniform(-0.2, 0.2)
            psf[n, k] = [w[k], rng.normal(0, 0.1), rng.normal(0, 0.1), sx * sx, rho * sx * sy, sy * sy]
        iota = rng.uniform(150, 250)
        sky = rng.uniform(0.05, 0.2)
        for y in range(2 * half + 1):
            for x in range(2 * half + 1):
                bgE = sky + (rng.uniform(0, 0.3) if neighbours else 0.0)
                bgV = rng.uniform(0, 0.01) if neighbours else 0.0
                counts = float(rng.poisson(iota * (bgE + 0.5 * np.exp(-((x - half) ** 2 + (y - half) ** 2) / 6))))
                rows.append([n, x, y, counts, iota, bgE, bgV])
    pix = np.ascontiguousarray(np.array(rows, dtype=np.float64))
    return make_problem(pix, img, psf, prototype_array())


def package_prior():
    """The package's priors (celeste/data/priors.json) as a :class:`kernels.inputs.Prior`."""
    from celeste.priors import load_priors

    return prior_from_arrays(load_priors().as_arrays())


def random_prior(rng, K=3):
    """A random :class:`kernels.inputs.Prior` with K colour components per type."""
    c_weight = np.stack([rng.dirichlet(np.ones(K)) for _ in range(2)])
    c_mean = rng.normal(0.3, 0.4, (2, K, 4))
    c_prec = np.zeros((2, K, 4, 4))
    c_logdet = np.zeros((2, K))
    for t in range(2):
        for k in range(K):
            A = rng.normal(0, 0.2, (4, 4))
            S = A @ A.T + 0.05 * np.eye(4)
            c_prec[t, k] = np.linalg.inv(S)
            c_logdet[t, k] = np.linalg.slogdet(S)[1]
    return make_prior(0.3, np.array([[1.5, 1.2], [1.0, 0.9]]), c_weight, c_mean, c_prec, c_logdet,
                      np.array([[0.0, 4.0], [0.5, 1.0], [0.3, 0.5]]))
