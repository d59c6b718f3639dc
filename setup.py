"""celeste: astronomical catalogs by variational Bayesian inference on survey images."""
from setuptools import setup

setup(
    name="celeste",
    version="0.1.0",
    description="Bayesian cataloging of SDSS imaging (Celeste model) with numba kernels, MPI and threads",
    packages=["celeste", "kernels"],
    package_data={"celeste": ["data/*.json", "data/*.fits"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "numba>=0.59",
        "astropy>=6.0",
        "fitsio>=1.2",
        "h5py>=3.8",
        "sep>=1.2",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "mpi4py>=3.1",
        "mpich>=4.0",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2.1", "hypothesis>=6", "galsim>=2.4", "photutils>=1.9"],
        "bench": ["jax", "jaxlib", "galsim>=2.4", "photutils>=1.9"],
    },
    entry_points={
        "console_scripts": [
            "celeste-infer=celeste.cli:main",
            "celeste-fit-priors=celeste.fitpriors:main",
            "celeste-score=celeste.score:main",
            "celeste-fetch=celeste.fetch:main",
        ]
    },
)
