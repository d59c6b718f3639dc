"""Named indices of the flat per-source parameter vector, and its transforms.

Every source is described by one float64 vector ``params`` of ``N_PARAMS`` *unconstrained*
values (the space the optimizer works in).  Type index ``t``: 0 = star, 1 = galaxy.
Band index ``b``: 0..4 = u, g, r, i, z.

=============  =====================================================================
index          meaning (units)
=============  =====================================================================
U_EAST, U_NORTH  position offset from the source's anchor (ra0, dec0), arcsec, on the
               local tangent plane: east = (ra - ra0) cos(dec0) * 3600, north = (dec - dec0) * 3600
A_STAR         logit of q(star), the posterior probability that the source is a star
R_MEAN[t]      mean of ln r, r the r-band flux in nmgy, under type t
R_LOGVAR[t]    log of the variance of ln r under type t
C_MEAN[t]+j    mean of colour j (j = 0..3: ln(f_g/f_u), ln(f_r/f_g), ln(f_i/f_r), ln(f_z/f_i))
C_LOGVAR[t]+j  log of the variance of colour j
E_DEV          logit of the de Vaucouleurs fraction frac_dev (galaxy = frac_dev dev + (1 - frac_dev) exp)
E_AXIS         logit of the axis ratio q = minor / major, in (0, 1)
E_ANGLE        position angle of the major axis, radians east of north (periodic, pi)
E_SCALE        ln of the half-light radius along the major axis, arcsec
=============  =====================================================================

Fluxes in other bands: ln f_b = ln r + sum_j COLOUR_TO_BAND[b, j] c_j (Regier et al.
AoAS 2019, Sec. 2: colours are log flux ratios of adjacent bands).
"""
import numpy as np

from .config import kernel

N_BANDS = 5
N_COLOURS = 4
N_TYPES = 2
STAR, GAL = 0, 1
REF_BAND = 2  # r

U_EAST = 0
U_NORTH = 1
A_STAR = 2
_BRIGHT0 = 3
N_BRIGHT = 2 + 2 * N_COLOURS  # per type
R_MEAN = np.array([_BRIGHT0 + t * N_BRIGHT for t in range(N_TYPES)], dtype=np.int64)
R_LOGVAR = R_MEAN + 1
C_MEAN = R_MEAN + 2
C_LOGVAR = R_MEAN + 2 + N_COLOURS
E_DEV = _BRIGHT0 + N_TYPES * N_BRIGHT  # 23
E_AXIS = E_DEV + 1
E_ANGLE = E_DEV + 2
E_SCALE = E_DEV + 3
N_PARAMS = E_DEV + 4  # 27

#: COLOUR_TO_BAND[b, j]: coefficient of colour j in ln f_b - ln r  (bands u g r i z)
COLOUR_TO_BAND = np.array(
    [
        [-1.0, -1.0, 0.0, 0.0],  # u = r / (g/u) / (r/g)
        [0.0, -1.0, 0.0, 0.0],  # g
        [0.0, 0.0, 0.0, 0.0],  # r
        [0.0, 0.0, 1.0, 0.0],  # i
        [0.0, 0.0, 1.0, 1.0],  # z
    ]
)

PARAM_NAMES = (
    ["u_east_arcsec", "u_north_arcsec", "a_star"]
    + [
        f"{t}_{n}"
        for t in ("star", "gal")
        for n in (["r_mean", "r_logvar"] + [f"c{j}_mean" for j in range(4)] + [f"c{j}_logvar" for j in range(4)])
    ]
    + ["e_dev", "e_axis", "e_angle", "e_scale"]
)
assert len(PARAM_NAMES) == N_PARAMS


@kernel
def sigmoid(x):
    """1 / (1 + exp(-x)): a probability or fraction from its logit (float or ndarray; numba-callable).

    Finite for every finite x (exp overflows to inf for x < -709, giving 0).
    """
    return 1.0 / (1.0 + np.exp(-x))


def logit(p):
    """ln(p / (1 - p)), the inverse of :func:`sigmoid` (float or ndarray, p in (0, 1))."""
    return np.log(p) - np.log1p(-p)
