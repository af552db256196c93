"""The toolkit's p-values and quantiles (vantage_algorithms.distributions) against scipy.stats,
and the central methods that report them without importing scipy."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from tests.algorithms.test_toolkit import REPO_ROOT
from vantage_algorithms.distributions import chi2_sf, normal_quantile, normal_sf


@pytest.mark.parametrize("dof", range(1, 9))
def test_chi2_sf_equals_scipy_from_the_centre_to_the_far_tail(dof):
    for x in (1e-9, 1e-3, 0.5, 1.0, 3.84, 7.5, 20.0, 100.0, 700.0):
        assert chi2_sf(x, dof) == pytest.approx(stats.chi2.sf(x, dof), rel=1e-12, abs=0.0)
    assert chi2_sf(0.0, dof) == 1.0
    assert chi2_sf(float("inf"), dof) == 0.0


@pytest.mark.parametrize("dof", [0, -1, 1.5, "2"])
def test_chi2_sf_refuses_degrees_of_freedom_that_are_not_whole_and_positive(dof):
    with pytest.raises(ValueError, match="degrees of freedom"):
        chi2_sf(3.0, dof)


def test_normal_sf_and_quantile_equal_scipy():
    for x in np.linspace(-8.0, 30.0, 153):
        assert normal_sf(float(x)) == pytest.approx(stats.norm.sf(x), rel=1e-12, abs=0.0)
    for p in (1e-10, 0.001, 0.025, 0.5, 0.9, 0.95, 0.975, 0.995, 1 - 1e-9):
        assert normal_quantile(p) == pytest.approx(stats.norm.ppf(p), rel=1e-14, abs=1e-15)


def test_the_logistic_central_reports_its_tests_and_intervals_without_scipy():
    """Its Wald p-values and intervals once imported scipy.stats at the end of the fit
    (0.5-1.5 s of CPU in the central's container); the values are checked against
    statsmodels in test_reference_local.py."""
    code = (
        "import sys\n"
        "import numpy as np, pandas as pd\n"
        "from vantage_algorithms.harness import run_local\n"
        "rng = np.random.default_rng(7)\n"
        "def site(n):\n"
        "    x = rng.normal(size=n)\n"
        "    return pd.DataFrame({'x': x, 'y': (rng.random(n) < 1 / (1 + np.exp(-0.8 * x))).astype(int)})\n"
        "fit = run_local('reference.logistic', 'logistic', kwargs={'outcome': 'y', 'covariates': ['x']},\n"
        "                sites={1: site(120), 2: site(90)})\n"
        "assert fit['converged'] and all(0 <= p <= 1 for p in fit['p_values']), fit\n"
        "print('scipy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO_ROOT / "algorithms")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
