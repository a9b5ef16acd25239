"""Who may see and change which experiment: the one place the sharing rules live.

- private: its owner only;
- team: every signed-in account of this server (the lab);
- public by link: the team, plus anyone holding the experiment's share link (read-only, no account).
Only the owner changes an experiment (cancel, delete, analyses, visibility); an experiment without
an owner (imported with `manage.py import_run`, or made before accounts) is team-visible and
changed by superusers. Anything a user may not see answers 404, as if it did not exist.

Sweeps follow the same rules with their own owner and visibility (can_view and can_change read
either), and the experiments a sweep makes get its visibility. A finished experiment a sweep reuses
keeps its own: the sweep page lists it only to those who may see it.

Datasets are the server's: only an admin (staff or superuser) downloads one (the datasets panel's
Download button); everyone signed in sees which are installed.

Reproduction checks (the Reproductions page) are lab-wide, not anyone's experiment: they check the
papers' claims with this server's code, so every signed-in account sees every check's runs and may
queue one; a queued or running check is cancelled by whoever queued it or by a superuser (so one
person's long run is not stopped by another by mistake). Signed-out visitors see nothing of them.
"""
from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404

from frontend.models import Experiment, ReproductionRun, Sweep

SHARE_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")  # secrets.token_urlsafe's alphabet
SHARED_VISIBILITIES = (Experiment.Visibility.TEAM, Experiment.Visibility.LINK)


def visible_to(user) -> Q:
    """The experiments (or sweeps) `user` may see, as a filter."""
    if not user.is_authenticated:
        return Q(pk__in=[])
    return Q(owner=user) | Q(owner__isnull=True) | Q(visibility__in=SHARED_VISIBILITIES)


def can_view(user, experiment: Experiment | Sweep) -> bool:
    if not user.is_authenticated:
        return False
    return (experiment.owner_id in (None, user.pk)) or experiment.visibility in SHARED_VISIBILITIES


def can_change(user, experiment: Experiment | Sweep) -> bool:
    if not user.is_authenticated:
        return False
    return experiment.owner_id == user.pk or (experiment.owner_id is None and user.is_superuser)


def experiment_for(user, experiment_id: int, change: bool = False) -> Experiment:
    """The experiment if `user` may see it (404 otherwise); with change=True they must also own it (403)."""
    return _row_for(Experiment, "experiment", user, experiment_id, change)


def sweep_for(user, sweep_id: int, change: bool = False) -> Sweep:
    """The sweep if `user` may see it (404 otherwise); with change=True they must also own it (403)."""
    return _row_for(Sweep, "sweep", user, sweep_id, change)


def _row_for(model, word: str, user, row_id: int, change: bool):
    row = model.objects.filter(pk=row_id).select_related("owner").first()
    if row is None or not can_view(user, row):
        raise Http404(f"there is no {word} {row_id}")
    if change and not can_change(user, row):
        raise PermissionDenied(f"only the {word}'s owner can change it")
    return row


def shared_experiment(token: str) -> Experiment:
    """The experiment behind a share link; 404 unless it is public by link."""
    if not SHARE_TOKEN_SHAPE.fullmatch(token or ""):  # e.g. a NUL byte, which PostgreSQL refuses to compare
        raise Http404("this share link does not exist or was withdrawn")
    experiment = Experiment.objects.filter(share_token=token, visibility=Experiment.Visibility.LINK).first()
    if experiment is None:
        raise Http404("this share link does not exist or was withdrawn")
    return experiment


def can_download_datasets(user) -> bool:
    return user.is_authenticated and (user.is_staff or user.is_superuser)


def can_run_reproductions(user) -> bool:
    return user.is_authenticated


def can_cancel_reproduction(user, run: ReproductionRun) -> bool:
    return user.is_authenticated and (run.requested_by_id == user.pk or user.is_superuser)
