"""The R client (clients/r, package `vantage`), installed into a temporary library.

R and the Debian packages it needs (r-base-core, r-cran-httr2, r-cran-jsonlite,
r-cran-survival, r-cran-testthat, r-cran-webfakes, r-cran-openssl) are installed by
.ci/run. Without them these tests skip on a developer's machine and fail under CI=true,
so a CI run can never pass while leaving the R client untested.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.live.conftest import live_db  # noqa: F401  (fixture reused, not copied)

R_PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "r"
R_PACKAGES = ("httr2", "jsonlite", "openssl", "survival", "testthat", "webfakes")


def r_missing() -> str | None:
    """Why R cannot run the package's tests here, or None."""
    if shutil.which("Rscript") is None or shutil.which("R") is None:
        return "R is not installed (apt-get install r-base-core)"
    check = "for (p in commandArgs(TRUE)) if (!requireNamespace(p, quietly = TRUE)) cat(p, '')"
    done = subprocess.run(["Rscript", "-e", check, *R_PACKAGES], capture_output=True, text=True,
                          timeout=120)
    missing = done.stdout.split()
    if done.returncode != 0 or missing:
        return f"R packages missing: {' '.join(missing) or done.stderr.strip()[-200:]} (apt-get install r-cran-...)"
    return None


@pytest.fixture(scope="session")
def r_library(tmp_path_factory) -> Path:
    """A library holding the package as `R CMD INSTALL clients/r` installs it."""
    why = r_missing()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the R client's tests cannot run under CI: {why}")
        pytest.skip(why)
    library = tmp_path_factory.mktemp("r-library")
    done = subprocess.run(["R", "CMD", "INSTALL", "--no-docs", "--no-multiarch", "-l", str(library), str(R_PACKAGE)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"R CMD INSTALL clients/r failed:\n{done.stdout}\n{done.stderr}"
    return library


def run_testthat(library: Path, test_file: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run one testthat file against the installed package; the reporter's summary line
    ("[ FAIL 0 | WARN 0 | SKIP 0 | PASS 12 ]") is checked by the caller."""
    script = (
        "res <- as.data.frame(testthat::test_file(commandArgs(TRUE)[1], reporter = 'progress', package = 'vantage', load_package = 'installed', "
        "stop_on_failure = FALSE));"
        "cat(sprintf('\\nR-TESTTHAT passed=%d failed=%d skipped=%d errors=%d\\n', sum(res$passed), "
        "sum(res$failed), sum(res$skipped), sum(res$error)));"
        "quit(status = if (sum(res$failed) + sum(res$error) > 0) 1 else 0)"
    )
    r_env = {**os.environ, "R_LIBS": str(library), **(env or {})}
    return subprocess.run(["Rscript", "-e", script, str(test_file)], cwd=test_file.parent,
                          env=r_env, capture_output=True, text=True, timeout=timeout)
