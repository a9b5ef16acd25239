"""Serves plotly.min.js straight out of the installed `plotly` package, so the page needs no CDN
and the browser library always matches the Python package that builds the figures."""
from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_STATIC_PATH = "vendor/plotly.min.js"
_PLOTLY_PACKAGE_DATA = Path(plotly.__file__).resolve().parent / "package_data"


class _PlotlyStorage(FileSystemStorage):
    """Maps the one static path onto the file inside the package (for collectstatic)."""

    def path(self, name):
        return str(_PLOTLY_PACKAGE_DATA / "plotly.min.js")


class PlotlyJsFinder(BaseFinder):
    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        if path != PLOTLY_STATIC_PATH:
            return []  # "not here" is [] either way: Django's finders.find would serve a None
        found = str(_PLOTLY_PACKAGE_DATA / "plotly.min.js")
        return [found] if find_all else found

    def list(self, ignore_patterns):
        yield PLOTLY_STATIC_PATH, _PlotlyStorage(location=str(_PLOTLY_PACKAGE_DATA))
