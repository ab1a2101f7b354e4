"""Seed one-line bugs into the product and check that the tests aimed at them fail.

A test that passes with the bug in place cannot catch it. Each entry below names a file, an exact
line fragment, what to replace it with, and the tests that must then fail. The script copies the
committed tree (``git worktree``) to a temporary folder, replaces its ``tests/`` with the working
tree's, applies one bug at a time there, runs the tests with that copy first on ``sys.path``, and
reports which bugs went unnoticed. The working tree is never touched. Run it after refactors (a few minutes)::

    .venv/bin/python tests/seeded_bugs.py            # all bugs
    .venv/bin/python tests/seeded_bugs.py hex_cross  # one bug by name

Exit status 1 when a bug is not caught or a fragment no longer exists (then update the entry).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ORIX = "tests/orientation/test_orix_crosscheck.py"
EXPORT = "tests/io/test_orientation_export.py"
ATOMS2D = "tests/synth/test_atoms2d.py"
#: name: (file, fragment, replacement, tests that must fail)
BUGS = {
    "hex_cross": ("micro_sym/grains/reconstruct.py", "x = a0 * b1 - a1 * b0 - a2 * b3 + a3 * b2",
                  "x = a0 * b1 - a1 * b0 + a2 * b3 + a3 * b2", ["tests/grains/test_grain_threshold.py"]),
    "half_angle": ("micro_sym/grains/reconstruct.py", "return w >= float(np.cos(np.deg2rad(threshold) / 2))",
                   "return w >= float(np.cos(np.deg2rad(threshold)))", ["tests/grains/test_grain_threshold.py"]),
    "angle_period": ("micro_sym/grains/reconstruct.py", "d += period / 2", "d += period / 3",
                     ["tests/grains/test_grain_threshold.py", "tests/grains/test_block_kernels.py"]),
    "angle_period_kernel": ("micro_sym/grains/_kernels.py", "    d = (a - b) + half\n    m = d\n",
                            "    d = (a - b) + half / 2\n    m = d\n",
                            ["tests/grains/test_grain_threshold.py", "tests/grains/test_block_kernels.py"]),
    "halo_rounded_down": ("micro_sym/inference/blocks.py", "halo = padded_size(max(int(halo), 0), stride)",
                          "halo = max(int(halo), 0) // stride * stride", ["tests/inference/test_tiling.py"]),
    "halo_halved": ("micro_sym/inference/blocks.py", "halo = padded_size(max(int(halo), 0), stride)",
                    "halo = padded_size(max(int(halo), 0) // 2, stride)", ["tests/inference/test_tiling.py"]),
    # Orientation conventions, against orix (tests/orientation/test_orix_crosscheck.py), and the EBSD export.
    "euler_conjugated": ("micro_sym/orientation/__init__.py",
                         "return quat_normalize(quat_multiply(quat_multiply(q1, q2), q3))",
                         "return quat_normalize(quat_conjugate(quat_multiply(quat_multiply(q1, q2), q3)))", [ORIX]),
    "misorientation_cubic_no_conjugate": ("micro_sym/orientation/__init__.py",
                                          "    d = quat_multiply(quat_conjugate(q1), q2)\n    w = np.abs(d @ _CUBIC_W.T)",
                                          "    d = quat_multiply(q1, q2)\n    w = np.abs(d @ _CUBIC_W.T)", [ORIX]),
    "ipf_no_conjugate": ("micro_sym/orientation/__init__.py", "v = quat_rotate(quat_conjugate(q), ", "v = quat_rotate(q, ",
                         [ORIX]),
    "export_2d_angle_sign": ("micro_sym/io/orientation_export.py",
                             "phi1 = np.mod(-np.asarray(theta_deg, dtype=np.float64), lattice.period)",
                             "phi1 = np.mod(np.asarray(theta_deg, dtype=np.float64), lattice.period)", [EXPORT]),
    "export_3d_no_conjugate": ("micro_sym/io/orientation_export.py",
                               "return np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])",
                               "return np.asarray(q, dtype=np.float64)", [EXPORT]),
    "export_nm_as_um": ("micro_sym/io/orientation_export.py", '"nm": 1e-3,', '"nm": 1.0,', [EXPORT]),
    # Atomistic micrographs: the truth's frame and angle against the rendered image.
    "atoms2d_y_down": ("micro_sym/synth/atoms2d.py", "x, y = cols * px, -rows * px", "x, y = cols * px, rows * px",
                       [ATOMS2D]),
    "atoms2d_angle_ignores_spin": ("micro_sym/synth/atoms2d.py", "v = rot @ ZONE_FRAMES[cfg.zone].T @ a1_zone",
                                   "v = a1_zone", [ATOMS2D]),
    # Rescaled networks (2D and 3D): a halo without the network's own reach breaks tiles = whole input.
    "rescale_halo_without_network": ("micro_sym/inference/resampling.py",
                                     "network_reach = SUPPORT * max(1.0, 1.0 / ratio) + net.halo + net.total_stride + 2",
                                     "network_reach = SUPPORT * max(1.0, 1.0 / ratio) + net.total_stride + 2",
                                     ["tests/inference/test_rescale3d.py", "tests/inference/test_rescale.py"]),
}


def _run(tree: Path, tests: list[str]) -> bool:
    """True when the tests pass in ``tree``."""
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{tree / 'plugins'}", QT_QPA_PLATFORM="offscreen")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True).returncode == 0


def main(names: list[str]) -> int:
    chosen = {n: BUGS[n] for n in (names or BUGS)}
    tmp = Path(tempfile.mkdtemp(prefix="micro_sym_bugs_"))
    tree = tmp / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), "HEAD"], cwd=ROOT, check=True, capture_output=True)
    shutil.rmtree(tree / "tests")
    shutil.copytree(ROOT / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    missed = []
    try:
        for name, (rel, fragment, replacement, tests) in chosen.items():
            path = tree / rel
            original = path.read_text()
            if original.count(fragment) != 1:
                print(f"{name}: fragment not found once in {rel}; update this entry")
                missed.append(name)
                continue
            path.write_text(original.replace(fragment, replacement))
            try:
                caught = not _run(tree, tests)
            finally:
                path.write_text(original)
            print(f"{name}: {'caught' if caught else 'NOT CAUGHT'} by {' '.join(tests)}")
            if not caught:
                missed.append(name)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
