"""The device's package set, simulated for the CPU rehearsal (benchmarks/mfu_check.sh --dry-run puts this
folder on PYTHONPATH with PRETRAIN_IMPORT_LOG set).

Every Python process of the rehearsal can import only what the device will have: its image's packages
(packages.txt, and whatever those need) and the carried wheels (wheels.txt). Any other package is hidden,
so an import the GPU path cannot do without fails here as it would there, while an optional one (torch's
``dill``) is skipped as it would be there. Each process also writes, at exit, the top-level modules it
imported and the ones it was refused, to $PRETRAIN_IMPORT_LOG/<pid>.txt."""

import atexit
import importlib.abc
import importlib.metadata
import os
import re
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_refused: set[str] = set()


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _listed(filename: str) -> set[str]:
    with open(os.path.join(_HERE, filename)) as handle:
        lines = (line.split("#")[0].strip() for line in handle)
        return {_normalize(line.split("==")[0]) for line in lines if line}


def _allowed() -> set[str]:
    """The image's packages with everything they require here (there, the image's own versions bring their
    own requirements), the carried wheels, and this project."""
    image, carried = _listed("packages.txt"), _listed("wheels.txt")
    allowed, todo = set(carried) | {"pretrain"}, list(image)
    while todo:
        name = todo.pop()
        if name in allowed:
            continue
        allowed.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [_normalize(re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r]
    return allowed


class _DeviceOnly(importlib.abc.MetaPathFinder):
    """Wraps one of the import system's finders: a package of no allowed distribution is not there (find_spec
    gives None, so ``import`` raises ModuleNotFoundError and ``importlib.util.find_spec`` answers None, as
    on a machine without it)."""

    def __init__(self, finder, owners: dict, allowed: set[str]) -> None:
        self.finder, self.owners, self.allowed = finder, owners, allowed

    def find_spec(self, fullname, path=None, target=None):
        find = getattr(self.finder, "find_spec", None)
        spec = find(fullname, path, target) if find else None
        owners = {_normalize(d) for d in self.owners.get(fullname, [])} if "." not in fullname else set()
        if spec is not None and owners and not owners & self.allowed and _installed_copy(spec, fullname):
            # not that copy; another one further on (a vendored copy on a later path entry) is still there
            folder = os.path.dirname(os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin)
            rest = [entry for entry in (path or sys.path) if os.path.abspath(entry or ".") != folder]
            spec = find(fullname, rest, target) if path is None and rest != sys.path else None
            if spec is None or _installed_copy(spec, fullname):
                _refused.add(fullname)
                return None
        return spec

    def __getattr__(self, name):  # invalidate_caches and the like
        return getattr(self.finder, name)


def _installed_copy(spec, name: str) -> bool:
    """Whether the module found is the distribution's own copy in a site-packages folder (not one that another
    package vendors, as setuptools vendors more_itertools, and carries wherever it goes)."""
    places = [spec.origin or "", *(spec.submodule_search_locations or [])]
    return any(re.search(rf"[/\\](site|dist)-packages[/\\]{re.escape(name)}([/\\.]|$)", place) for place in places)


def _record() -> None:
    folder = os.environ.get("PRETRAIN_IMPORT_LOG")
    names = sorted({name.split(".")[0] for name in list(sys.modules) if not name.startswith("_")})
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{os.getpid()}.txt"), "w") as handle:
        handle.write(" ".join(sys.argv)[:300] + "\n")
        handle.write("\n".join(names + [f"refused {name}" for name in sorted(_refused)]) + "\n")


if os.environ.get("PRETRAIN_IMPORT_LOG"):
    _owners, _allowed_names = importlib.metadata.packages_distributions(), _allowed()
    sys.meta_path[:] = [_DeviceOnly(finder, _owners, _allowed_names) for finder in sys.meta_path]
    atexit.register(_record)
