"""The built wheel, installed as a new user would: no extras, then each extra.

Installing the extras in sequence into one fresh virtualenv checks each extra alone:
``planner`` contains ``slm``, which contains the base, and the import surface checked after
each step is the one that extra has to carry (the planner's modules are not imported while
only ``slm`` is installed, so a stray ``import ray`` in ``mesh.slm`` fails). Real installs,
with dependencies: the point is that the declared dependencies suffice, which ``--no-deps``
cannot show. One shortcut: torch 2.13.0, where the test's own environment has it, is
hard-linked into the new virtualenv before the slm extra goes in rather than unpacked again
(~800 MB, about 30 s); pip then finds the extra's ``torch==2.13.0`` satisfied and still
resolves torch's own dependencies.

CI cost (issue 20 gave this test and tests/integration/planner/test_ray_cluster.py three minutes
together), measured on 2 cores with a load average of 9: wheel 7 s, venv 9 s, base install
31 s, slm 19 s, planner 9 s, the import-surface checks 20 s each, about 2 minutes in all;
on an idle machine about half that.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from tests.support.procs import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

CHECKER = ROOT / "tests" / "support" / "import_surface.py"
#: Build-backend warnings caused by the project's own metadata (the license table was one).
PROJECT_WARNING = re.compile(r"(?i)deprecat|BuildBackendWarning|SetuptoolsWarning")


@dataclass
class FreshInstall:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command of the virtualenv, outside the checkout (so ``mesh`` is the installed one)."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.venv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def has(self, module: str) -> bool:
        found = self.run(
            self.python, "-c", f"import importlib.util as u; print(u.find_spec({module!r}))"
        )
        return found.stdout.strip() != "None"

    def link_installed(self, dist: str) -> bool:
        """Hard-links an installed distribution of this interpreter into the virtualenv (its
        packages and metadata, not its scripts; copies where links cannot cross file
        systems). Links, not symlinks: pip replacing it there must not touch the original.
        False where it is not installed here."""
        try:
            installed = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            return False
        (site,) = (self.venv / "lib").glob("python3*/site-packages")
        for top in sorted({f.parts[0] for f in installed.files or [] if f.parts[0] != ".."}):
            source = Path(installed.locate_file(top))
            if source.is_dir():
                shutil.copytree(source, site / top, copy_function=_link_or_copy)
            else:
                _link_or_copy(source, site / top)
        return True

    def install(self, extra: str | None) -> str:
        target = f"slmesh[{extra}] @ {self.wheel.as_uri()}" if extra else str(self.wheel)
        done = self.run(
            self.python, "-m", "pip", "install", "--no-compile", "--disable-pip-version-check",
            target,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _project_warnings(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if PROJECT_WARNING.search(line) or ("warning" in line.lower() and "slmesh" in line)
    ]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> FreshInstall:
    """The wheel built from this checkout and a new virtualenv with it installed, no extras."""
    root = tmp_path_factory.mktemp("packaging")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(root / "dist"),
         str(ROOT)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    assert _project_warnings(build.stdout + build.stderr) == []
    (wheel,) = (root / "dist").glob("slmesh-*.whl")
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    install = FreshInstall(wheel, root / "venv")
    assert _project_warnings(install.install(None)) == []
    return install


def test_base_install_runs_the_cli_and_the_probe_without_torch(fresh: FreshInstall) -> None:
    from mesh import __version__

    version = fresh.run("slmesh", "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"slmesh {__version__}")
    cli_help = fresh.run("slmesh", "--help")
    assert cli_help.returncode == 0, cli_help.stderr
    assert "agents" in cli_help.stdout
    probe_help = fresh.run(fresh.python, "-m", "mesh.probe", "--help")
    assert probe_help.returncode == 0, probe_help.stderr
    assert "SERVING" in probe_help.stdout

    # The conversion demo is library code now: it ships in the wheel, not beside it in bench/.
    assert fresh.has("mesh.convert.demo")
    demo_help = fresh.run("slmesh", "convert", "demo", "--help")
    assert demo_help.returncode == 0, demo_help.stderr
    assert "--services-dir" in demo_help.stdout

    surface = fresh.run(fresh.python, CHECKER, "base")
    assert surface.returncode == 0, surface.stdout + surface.stderr
    for heavy in ("torch", "ray", "transformers"):
        assert not fresh.has(heavy), f"{heavy} arrived with the base install"


def test_each_extra_alone_carries_its_import_surface(fresh: FreshInstall) -> None:
    fresh.link_installed("torch")
    for extra in ("slm", "planner"):
        assert _project_warnings(fresh.install(extra)) == [], extra
        surface = fresh.run(fresh.python, CHECKER, extra, timeout=180)
        assert surface.returncode == 0, f"{extra}: {surface.stdout}{surface.stderr}"
        if extra == "slm":
            assert not fresh.has("ray"), "ray arrived with the slm extra"
    requires = fresh.run(
        fresh.python,
        "-c",
        "import importlib.metadata as m; print(*m.requires('slmesh'), sep='\\n')",
    ).stdout.splitlines()
    assert 'slmesh[slm]; extra == "planner"' in requires
    assert 'torch==2.13.0; extra == "slm"' in requires
    torch = fresh.run(fresh.python, "-c", "import torch; print(torch.__version__)")
    assert torch.stdout.startswith("2.13.0"), "the planner extra lacks the slm extra's torch pin"
