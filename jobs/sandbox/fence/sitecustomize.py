"""GDAL's fence for a rule's Python processes, loaded by Python at start-up (`sitecustomize`).

The rule guard puts this folder on PYTHONPATH. When a process first imports ``osgeo.gdal`` or
``osgeo.ogr``, every GDAL/OGR driver that ``LMWEB_GDAL_DRIVERS`` (comma-separated short names;
empty: none) does not name is removed, and stays removed when something registers drivers again;
``gdal.Open``/``OpenEx``/``OpenShared``, ``ogr.Open``/``OpenShared`` and the drivers' ``Open``,
``Create`` and ``CreateCopy`` refuse URLs and ``/vsi*`` paths, except the virtual file systems that
``LMWEB_GDAL_VSI`` names (e.g. ``/vsizip/``), and those only over a local file, never nested.

So a hostile file cannot make GDAL pick another driver by its content (a ``.shp`` that is OGR VRT
XML reading the service's database), and no path reaches ``/vsicurl/`` and the like.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

_DRIVERS = os.environ.get("LMWEB_GDAL_DRIVERS")
_VSI = tuple(
    prefix.strip()
    for prefix in os.environ.get("LMWEB_GDAL_VSI", "").split(",")
    if prefix.strip().startswith("/vsi")
)
# In-memory files never leave the process: GDAL's own code uses them.
_ALWAYS = ("/vsimem/",)


class FencedPath(RuntimeError):
    """GDAL was asked for a path this rule may not open."""


def check_path(name: object) -> None:
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    try:
        text = os.fspath(name) if not isinstance(name, str) else name
    except TypeError:
        return
    if not isinstance(text, str):
        return
    if "://" in text:
        raise FencedPath(f"GDAL may not open URLs in this rule: {text!r}")
    if not text.startswith("/vsi"):
        return
    if text.startswith(_ALWAYS):
        return
    for prefix in _VSI:
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            if "/vsi" not in rest:
                return
            raise FencedPath(f"GDAL may not open nested virtual file systems: {text!r}")
    raise FencedPath(f"GDAL may not open {text.split('/')[1]!r} paths in this rule: {text!r}")


def _allowed() -> set[str]:
    return {name.strip() for name in (_DRIVERS or "").split(",") if name.strip()}


def _remove_drivers(gdal) -> None:
    allowed = _allowed()
    for index in reversed(range(gdal.GetDriverCount())):
        driver = gdal.GetDriver(index)
        if driver is not None and driver.ShortName not in allowed:
            driver.Deregister()


def _guarded(function, position: int = 0):
    def call(*args, **kwargs):
        if len(args) > position:
            check_path(args[position])
        for key in ("utf8_path", "pszName", "filename", "name"):
            if key in kwargs:
                check_path(kwargs[key])
        return function(*args, **kwargs)

    call.__name__ = getattr(function, "__name__", "call")
    call.__doc__ = getattr(function, "__doc__", None)
    call.lmweb_fenced = True
    return call


def _fence_gdal(gdal) -> None:
    if getattr(gdal, "lmweb_fenced", False):
        return
    gdal.lmweb_fenced = True
    for name in ("Open", "OpenEx", "OpenShared"):
        setattr(gdal, name, _guarded(getattr(gdal, name)))
    driver = gdal.Driver
    driver.Create = _guarded(driver.Create, 1)
    driver.CreateCopy = _guarded(driver.CreateCopy, 1)
    register = gdal.AllRegister

    def all_register(*args, **kwargs):
        result = register(*args, **kwargs)
        _remove_drivers(gdal)
        return result

    gdal.AllRegister = all_register
    _remove_drivers(gdal)


def _fence_ogr(ogr) -> None:
    if getattr(ogr, "lmweb_fenced", False):
        return
    ogr.lmweb_fenced = True
    for name in ("Open", "OpenShared"):
        setattr(ogr, name, _guarded(getattr(ogr, name)))
    driver = ogr.Driver
    driver.Open = _guarded(driver.Open, 1)
    driver.CreateDataSource = _guarded(driver.CreateDataSource, 1)
    driver.CopyDataSource = _guarded(driver.CopyDataSource, 2)
    register = ogr.RegisterAll

    def register_all(*args, **kwargs):
        result = register(*args, **kwargs)
        _remove_drivers(sys.modules["osgeo.gdal"])
        return result

    ogr.RegisterAll = register_all
    # Importing ogr registered every driver again. osgeo.gdal imports ogr half-way through its
    # own import: then gdal's fence, which runs once gdal is complete, removes them.
    gdal = sys.modules.get("osgeo.gdal")
    if gdal is None:
        import osgeo.gdal  # noqa: F401  (fenced, drivers removed, on import)
    elif hasattr(gdal, "GetDriverCount") and getattr(gdal, "lmweb_fenced", False):
        _remove_drivers(gdal)


_FENCES = {"osgeo.gdal": _fence_gdal, "osgeo.ogr": _fence_ogr}


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, fence):
        self.loader, self.fence = loader, fence

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.fence(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loaders of osgeo.gdal and osgeo.ogr so that each is fenced once imported."""

    def find_spec(self, fullname, path, target=None):
        fence = _FENCES.get(fullname)
        if fence is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader, fence)
        return spec


def install() -> None:
    if _DRIVERS is None or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
    for name, fence in _FENCES.items():
        if name in sys.modules:
            fence(sys.modules[name])


install()
