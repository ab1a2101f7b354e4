"""Plain-torch copies of escnn model files, kept on disk so that inference never builds escnn.

Loading a 2D escnn model file means importing escnn and building every layer's steerable basis
before the stored weights can be read: seconds before the first pixel, on every ``micro-sym segment``
run. Inference needs only the exported network (:func:`micro_sym.deploy.export.deployed_network`), so the
first load of a model file writes that export (a ``micro_sym.deployed`` file, read with
``weights_only=True``) to the cache, and later loads read it back without escnn.

A cached copy is named by the SHA-256 of the model file and a key of the exporter's and the models'
code and the torch version, so an edited model file or a changed exporter never reuses a stale
copy. The first load runs the very module it caches (rebuilt from the same state dict), so a run's
outputs do not depend on whether the copy existed.

The folder is ``$MICRO_SYM_CACHE_DIR``, else ``$XDG_CACHE_HOME/micro_sym``, else ``~/.cache/micro_sym``.
An unwritable folder only costs the speed-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

import torch

from micro_sym.errors import MicroSymError

ENV_VAR = "MICRO_SYM_CACHE_DIR"
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where exported copies are kept (see the module docstring)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "micro_sym"


def _export_key() -> str:
    """Changes with the exporter's code, the models' code (their ``export()``) or the torch version: any
    of them could change the exported layers."""
    from micro_sym import __version__
    from micro_sym.deploy import export

    h = hashlib.sha256(f"{__version__} {torch.__version__}".encode())
    package = Path(export.__file__).parents[1]
    for source in [Path(export.__file__), *sorted((package / "models").glob("*.py"))]:
        h.update(source.read_bytes())
    return h.hexdigest()[:12]


def load_for_inference(name_or_path, device: str = "cpu"):
    """A model file (or bundled name) as the network inference runs.

    escnn model files come back as the :class:`~micro_sym.deploy.export.DeployedModel` of their
    export, from the cache when it holds one; deployed files and 3D models load as they are
    (:func:`micro_sym.models.load_model`). ``meta["path"]`` and ``meta["sha256"]`` name the model file
    itself, so run manifests are the same whether the copy came from the cache or not.
    """
    from micro_sym.deploy.export import DEPLOYED_TAG, DeployedModel, deployed_network, load_deployed
    from micro_sym.models.registry import load_model, resolve_model_path

    path = resolve_model_path(name_or_path)
    try:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise MicroSymError(f"{path}: cannot read the model file ({err.strerror})") from None
    copy = cache_dir() / f"{sha[:32]}-{_export_key()}.pt"
    model = None
    if copy.is_file():
        try:
            model = load_deployed(copy, device)
        except MicroSymError as err:  # a damaged copy is rebuilt, never trusted
            log.info("ignoring the cached export %s (%s)", copy, err)
    if model is None:
        source = load_model(path, device="cpu")
        if int(source.ndim) != 2 or getattr(source, "exported", False):
            return source.to(device)
        net, meta = deployed_network(source)
        meta["format"] = "torch"
        spec = meta.pop("spec")
        _store(copy, {"format": DEPLOYED_TAG, "spec": spec, "state_dict": net.state_dict(), "meta": meta})
        model = DeployedModel(meta, "torch", module=net)
        model.spec = spec
    model.meta.update({"path": str(path), "sha256": sha})
    return model.to(device).eval()


def _store(path: Path, blob: dict) -> None:
    """Write ``blob`` to ``path`` atomically (a crash leaves no half file); failures are only logged."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**blob, "state_dict": {k: v.detach().cpu().clone() for k, v in blob["state_dict"].items()}}, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as err:  # torch.save reports some file errors as RuntimeError
        log.info("not caching the exported model at %s (%s)", path, err)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
