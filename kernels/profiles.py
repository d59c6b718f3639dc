"""Galaxy prototypes: the exponential and de Vaucouleurs profiles as Gaussian mixtures.

Each prototype is a mixture of concentric circular 2-D Gaussians with unit total flux
and half-light radius 1::

    M(r) = sum_j AMP[j] exp(-r^2 / (2 VAR[j])) / (2 pi VAR[j])

``*_AMP`` are the component fluxes (they sum to 1); ``*_VAR`` the variance of each
component per axis, in units of (half-light radius)^2.  The method follows Hogg &
Lang 2013 (PASP 125, 719, "Replacing standard galaxy profiles with mixtures of
Gaussians"), but the numbers are our own fit (``python bench/fit_profiles.py`` prints
them) and the targets are the *untruncated* Sersic profiles, so that ``re`` is exactly
the half-light radius of the mixture (Hogg & Lang fit SDSS's truncated, softened
profiles instead):

* exponential (Sersic n = 1), 6 components, fit over 0 <= r <= 8 re;
* de Vaucouleurs (Sersic n = 4), 8 components, fit over 0 <= r <= 10 re.

Fitting objective (unit-flux Sersic ``S_n(r) = I_e exp(-b_n (r^(1/n) - 1))``, Graham &
Driver 2005, PASA 22, 118, eqs. 1 and 4; amplitudes held to a sum of 1 by a softmax,
variances by a log)::

    L = int_0^R_max (M(r) - S_n(r))^2 / S_n(r)  r dr

the squared error of the radial profile weighted by radius and by the inverse of the
profile (a chi-square with the galaxy's own Poisson variance).  Residuals achieved
(``bench/fit_profiles.py``; relative error is ``|M(r)/S_n(r) - 1|``):

==============  =========  ====================  ===================  =================  ==============
profile         L          max rel. 0.1-4 re     max rel. 0.01-0.1    max rel. 4-8 re    half-light r.
==============  =========  ====================  ===================  =================  ==============
exponential     1.61e-06   0.0090                0.048                0.25 (at 8 re)     0.99992
de Vaucouleurs  7.80e-05   0.033                 0.097                0.035              1.00091
==============  =========  ====================  ===================  =================  ==============

(for scale, ``int_0^inf S_n r dr = 1 / (2 pi) = 0.159``).  The de Vaucouleurs profile
keeps 5.7 % of its flux beyond 8 re; the mixture's widest component (variance 50.5 re^2,
10 % of the flux) carries it, so renderers that cut a galaxy off at a few re lose that
light.

Convention for an elliptical galaxy with half-light radius ``re`` along the major axis,
axis ratio ``q`` = minor / major and position angle ``phi`` of the major axis (radians
east of north): component j has covariance, in (east, north) coordinates::

    cov_j = var_j * re^2 * R diag(1, q^2) R^T,    R = [[sin phi, -cos phi],
                                                       [cos phi,  sin phi]]

(the first column of R is the major-axis direction (east, north) = (sin phi, cos phi)).
So ``cov_ee = v re^2 (sin^2 phi + q^2 cos^2 phi)``, ``cov_nn = v re^2 (cos^2 phi + q^2
sin^2 phi)``, ``cov_en = v re^2 (1 - q^2) sin phi cos phi``.  The galaxy light is
``(1 - theta) exp + theta dev`` with theta the de Vaucouleurs fraction (Regier et al.
AoAS 2019, Sec. 2).
"""
import numpy as np

from celeste.errors import ConfigError

N_EXP = 6
N_DEV = 8
#: number of components of a galaxy (exponential ones first, then de Vaucouleurs)
N_GAL = N_EXP + N_DEV

#: exponential prototype: component fluxes (sum 1)
EXP_AMP = np.array([0.0051963501845497875, 0.05093402379446309, 0.210572919250591, 0.3990860357383214,
                    0.28709686378659105, 0.0471138072454836])
#: exponential prototype: component variances, (half-light radius)^2
EXP_VAR = np.array([0.011023250083825627, 0.07263983147315106, 0.2723850109881796, 0.7646245499960648,
                    1.7977584972019596, 3.867746016617865])

#: de Vaucouleurs prototype: component fluxes (sum 1)
DEV_AMP = np.array([0.00593049129262722, 0.028993818669234037, 0.08063137328891211, 0.15479710458001525,
                    0.21800130124168746, 0.22878512985908311, 0.18258660320660386, 0.10027417786183701])
#: de Vaucouleurs prototype: component variances, (half-light radius)^2
DEV_VAR = np.array([1.2515442493732663e-04, 1.7370606153299789e-03, 1.3303796027801304e-02,
                    7.7023683726977737e-02, 3.8028154862638447e-01, 1.7173569691286399e+00,
                    7.7655856545292412e+00, 5.0505497500650570e+01])

# Prototype arrays are constants: freeze them so a kernel or a test cannot change them by accident.
for _a in (EXP_AMP, EXP_VAR, DEV_AMP, DEV_VAR):
    _a.setflags(write=False)


def _check_scalar(name, value, lo, hi, lo_open, hi_open):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    below = v <= lo if lo_open else v < lo
    above = v >= hi if hi_open else v > hi
    if not np.isfinite(v) or below or above:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ConfigError(f"{name}: {value!r} is outside {lb}{lo}, {hi}{rb}")
    return v


def galaxy_mixture(frac_dev, re_arcsec, axis_ratio, angle_rad):
    """Gaussian mixture of a galaxy's light on the sky (plain numpy; for tests and plots).

    Parameters
    ----------
    frac_dev : float
        de Vaucouleurs fraction theta in [0, 1]; the light is (1 - theta) exp + theta dev.
    re_arcsec : float
        Half-light radius along the major axis, arcsec, > 0.
    axis_ratio : float
        Minor / major axis ratio q in (0, 1].
    angle_rad : float
        Position angle of the major axis, radians east of north.

    Returns
    -------
    weight : ndarray (14,) float64
        Component fluxes as fractions of the galaxy's flux (sum 1): the 6 exponential
        components (``(1 - theta) EXP_AMP``) then the 8 de Vaucouleurs ones (``theta DEV_AMP``).
    cov : ndarray (14, 2, 2) float64
        Component covariances in (east, north) coordinates, arcsec^2:
        ``var_j re^2 R diag(1, q^2) R^T`` (module docstring; Regier et al. AoAS 2019, Sec. 2;
        Hogg & Lang 2013).

    Raises
    ------
    ConfigError
        If an argument is not a finite number in its range (the message names it).
    """
    theta = _check_scalar("frac_dev", frac_dev, 0.0, 1.0, False, False)
    re = _check_scalar("re_arcsec", re_arcsec, 0.0, np.inf, True, True)
    q = _check_scalar("axis_ratio", axis_ratio, 0.0, 1.0, True, False)
    phi = _check_scalar("angle_rad", angle_rad, -np.inf, np.inf, True, True)
    weight = np.concatenate([(1.0 - theta) * EXP_AMP, theta * DEV_AMP])
    var = np.concatenate([EXP_VAR, DEV_VAR]) * re * re
    s, c = np.sin(phi), np.cos(phi)
    rot = np.array([[s, -c], [c, s]])
    shape = rot @ np.diag([1.0, q * q]) @ rot.T
    shape = 0.5 * (shape + shape.T)
    cov = var[:, None, None] * shape[None, :, :]
    return weight, cov


def prototype_array():
    """Both prototypes in the layout the numba kernels take (``kernels.elbo``: ``proto``).

    Returns
    -------
    ndarray (2, 8, 2) float64, C-contiguous, a fresh copy
        ``[0]`` exponential, ``[1]`` de Vaucouleurs; ``[..., 0]`` component flux,
        ``[..., 1]`` variance in (half-light radius)^2.  The exponential's rows 6 and 7
        are zero-amplitude padding (variance 1, so a kernel never divides by zero).
    """
    out = np.zeros((2, max(N_EXP, N_DEV), 2))
    out[:, :, 1] = 1.0
    out[0, :N_EXP, 0] = EXP_AMP
    out[0, :N_EXP, 1] = EXP_VAR
    out[1, :N_DEV, 0] = DEV_AMP
    out[1, :N_DEV, 1] = DEV_VAR
    return out
