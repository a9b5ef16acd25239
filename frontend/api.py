"""The JSON API: list, create, get, relabel (name, description, tags), cancel experiments (and sweeps) and read
their results, with token auth.

Every request carries "Authorization: Token <key>" (keys come from /account/token/ or
`manage.py api_token USER`). The sharing rules are the web pages' (frontend.access): what a user
may not see is a 404, what they may see but not change a 403. Errors are JSON: {"error": ...,
"field": ...} with a 4xx status, never a traceback.
"""
from __future__ import annotations

import functools
import json

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from frontend import access, catalog, labels, queries, services, sweep_results
from frontend.models import ApiToken, Experiment, Sweep
from frontend.progress import progress_of
from trainer.analyses import ANALYSES, check_runs_with_experiment
from trainer.spec import ExperimentSpec, SpecError
from trainer.sweeps import SweepDefinition

MAX_BODY_BYTES = 64 * 1024  # a spec is a few hundred bytes
LABEL_KEYS = ("name", "description", "tags")


def error(status: int, message: str, field: str | None = None) -> JsonResponse:
    body = {"error": message}
    if field:
        body["field"] = field
    return JsonResponse(body, status=status)


def _token_user(request):
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "token" or not key.strip():
        return None
    token = ApiToken.objects.filter(key_hash=ApiToken.hash_key(key.strip())).select_related("user").first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


def api_view(methods: tuple[str, ...]):
    """Token auth, allowed methods, and every refusal as a JSON 4xx."""
    def decorate(view):
        @csrf_exempt  # token-authenticated: no cookies involved, so no cross-site request forgery
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                response = error(405, f"{request.method} is not allowed here; use {' or '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            user = _token_user(request)
            if user is None:
                return error(401, "send 'Authorization: Token <key>' with a valid API key (see /account/token/)")
            request.user = user
            try:
                return view(request, *args, **kwargs)
            except Http404 as missing:
                return error(404, str(missing) or "not found")
            except PermissionDenied as denied:
                return error(403, str(denied) or "not allowed")
        return wrapper
    return decorate


def experiment_json(experiment: Experiment, detail: bool = False) -> dict:
    data = {"id": experiment.pk, "name": experiment.display_name, "tags": [tag.name for tag in experiment.tags.all()],
            "status": experiment.status, "message": experiment.message,
            "model": experiment.model_name, "dataset": experiment.dataset_name,
            # rounds' *_metric values are this metric (a fraction for accuracy)
            "task": experiment.task.name, "metric": experiment.metric.to_dict(),
            "owner": experiment.owner.get_username() if experiment.owner else None,
            "visibility": experiment.visibility, "created_at": experiment.created_at.isoformat(),
            "finished_at": experiment.finished_at.isoformat() if experiment.finished_at else None,
            "url": f"/e/{experiment.pk}/", "progress": progress_of(experiment)}
    if experiment.visibility == Experiment.Visibility.LINK:
        data["share_url"] = f"/s/{experiment.share_token}/"
    if detail:
        data["description"] = experiment.description  # Markdown as written; pages show it sanitised
        data["spec"] = experiment.spec
        data["rounds"] = [queries.round_row(row) for row in experiment.round_results.order_by(
            "network", "replicate", "round_index")]
        data["analyses"] = [{"id": run.pk, "name": run.name, "status": run.status, "params": run.params}
                            for run in experiment.analysis_runs.all()]
    return data


def _parse_body(request) -> dict | JsonResponse:
    if len(request.body) > MAX_BODY_BYTES:
        return error(413, f"the request body is {len(request.body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as problem:
        return error(400, f"the body is not valid JSON: {problem}")
    if not isinstance(body, dict):
        return error(400, 'the body must be a JSON object: {"spec": {...}, "visibility": "private"}')
    return body


def _visibility_and_analyses(body: dict) -> tuple[str, list] | JsonResponse:
    """The body's "visibility" (default private) and "analyses" (default none), or the 400 refusing them."""
    visibility = body.get("visibility", Experiment.Visibility.PRIVATE)
    if visibility not in Experiment.Visibility.values:
        return error(400, f"visibility must be one of {', '.join(Experiment.Visibility.values)}", field="visibility")
    analyses = body.get("analyses", [])
    if not isinstance(analyses, list) or any(name not in ANALYSES for name in analyses):
        return error(400, f"analyses must be a list of {', '.join(ANALYSES)}", field="analyses")
    return visibility, analyses


@api_view(("GET", "POST"))
def experiments(request):
    if request.method == "GET":
        rows = (Experiment.objects.filter(access.visible_to(request.user)).select_related("owner")
                .prefetch_related("tags")[:500])
        return JsonResponse({"experiments": [experiment_json(row) for row in rows]})
    body = _parse_body(request)
    if isinstance(body, JsonResponse):
        return body
    unknown = set(body) - {"spec", "visibility", "analyses", *LABEL_KEYS}
    if unknown:
        return error(400, f"unknown keys {sorted(unknown)}; send spec, visibility, analyses, name, description, tags",
                     field=sorted(unknown)[0])
    cleaned_labels = _labels(body)
    if isinstance(cleaned_labels, JsonResponse):
        return cleaned_labels
    choices = _visibility_and_analyses(body)
    if isinstance(choices, JsonResponse):
        return choices
    visibility, analyses = choices
    try:
        spec = ExperimentSpec.from_dict(body.get("spec", {}))
        catalog.check_runnable_here(spec)
    except SpecError as problem:
        return error(400, problem.message, field=f"spec.{problem.field}")
    try:
        check_runs_with_experiment(analyses, spec)
    except SpecError as problem:
        return error(400, problem.message, field=problem.field)
    experiment = services.create_experiment(spec, analyses=analyses, owner=request.user, visibility=visibility,
                                            **cleaned_labels)
    return JsonResponse(experiment_json(experiment, detail=True), status=201)


def _labels(body: dict) -> dict | JsonResponse:
    """name, description, tags of a request body, cleaned by frontend.labels' rules (missing: empty)."""
    rules = {"name": labels.clean_name, "description": labels.clean_description, "tags": labels.parse_tags}
    cleaned = {}
    for key, rule in rules.items():
        try:
            cleaned[key] = rule(body.get(key))
        except ValueError as problem:
            return error(400, str(problem), field=key)
    return cleaned


@api_view(("GET", "PATCH"))
def experiment_detail(request, experiment_id: int):
    """GET: the experiment; PATCH {"name", "description", "tags"} (any of them): the owner relabels it."""
    if request.method == "GET":
        return JsonResponse(experiment_json(access.experiment_for(request.user, experiment_id), detail=True))
    experiment = access.experiment_for(request.user, experiment_id, change=True)
    body = _parse_body(request)
    if isinstance(body, JsonResponse):
        return body
    unknown = set(body) - set(LABEL_KEYS)
    if unknown:
        return error(400, f"unknown keys {sorted(unknown)}; PATCH changes name, description, tags",
                     field=sorted(unknown)[0])
    current = {"name": experiment.name, "description": experiment.description,
               "tags": [tag.name for tag in experiment.tags.all()]}
    cleaned_labels = _labels({**current, **body})
    if isinstance(cleaned_labels, JsonResponse):
        return cleaned_labels
    services.set_labels(experiment, **cleaned_labels)
    return JsonResponse(experiment_json(experiment, detail=True))


@api_view(("POST",))
def experiment_cancel(request, experiment_id: int):
    experiment = access.experiment_for(request.user, experiment_id, change=True)
    if experiment.is_done:
        return error(409, f"experiment {experiment.pk} has already ended ({experiment.status})")
    services.request_cancel(experiment)
    experiment.refresh_from_db()
    return JsonResponse(experiment_json(experiment))


@api_view(("GET",))
def experiment_results(request, experiment_id: int):
    """The trainer's results.json of a run that has ended."""
    experiment = access.experiment_for(request.user, experiment_id)
    path = experiment.results_path
    if not path:
        return error(404, f"experiment {experiment.pk} has no results yet ({experiment.status})")
    try:
        with open(path, "rb") as handle:
            return JsonResponse(json.load(handle), safe=False)
    except (OSError, ValueError):
        return error(404, f"the results file of experiment {experiment.pk} is missing or unreadable")



# ---- sweeps --------------------------------------------------------------------------------------

SWEEP_KEYS = {"base_spec", "grid", "points", "seeds", "name", "description", "tags", "visibility", "analyses"}


def sweep_json(sweep: Sweep, user, detail: bool = False) -> dict:
    points = sweep_results.points_of(sweep, user)
    data = {"id": sweep.pk, "name": sweep.name, "status": sweep_results.sweep_status(sweep, points),
            "owner": sweep.owner.get_username() if sweep.owner else None, "visibility": sweep.visibility,
            "seeds": sweep.seeds, "fields": sweep_results.swept_fields(sweep), "size": len(points),
            "counts": sweep_results.status_counts(points), "created_at": sweep.created_at.isoformat(),
            "url": f"/sweeps/{sweep.pk}/"}
    if detail:
        metric = sweep_results.metric_of(points)
        table = sweep_results.configuration_table(sweep, points)
        data.update({
            "description": sweep.description, "tags": [tag.name for tag in sweep.tags.all()],
            "base_spec": sweep.base_spec, "grid": sweep.grid, "points": [
                {"index": point["index"], "config": point["config"], "seed_index": point["seed_index"],
                 "experiment": point["experiment"].pk, "status": point["status"], "reused": point["reused"]}
                for point in points],
            "metric": metric.to_dict(),
            # stored units (fractions): bands are {mean, std, min, max, count} over the configuration's seeds
            "configurations": [{"config": row["config"], "seeds": row["summary"]["seeds"],
                                "dense": row["summary"]["dense"], "best_remaining": row["summary"]["best_remaining"],
                                "best_metric": row["summary"]["best_metric"], "verdict": row["summary"]["verdict"]}
                               for row in table]})
    return data


@api_view(("GET", "POST"))
def sweeps(request):
    if request.method == "GET":
        rows = Sweep.objects.filter(access.visible_to(request.user)).select_related("owner")[:200]
        return JsonResponse({"sweeps": [sweep_json(row, request.user) for row in rows]})
    body = _parse_body(request)
    if isinstance(body, JsonResponse):
        return body
    unknown = set(body) - SWEEP_KEYS
    if unknown:
        return error(400, f"unknown keys {sorted(unknown)}; send {', '.join(sorted(SWEEP_KEYS))}",
                     field=sorted(unknown)[0])
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 150:
        return error(400, "name: a non-empty text of at most 150 characters", field="name")
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > 20_000:
        return error(400, "description: a text (Markdown) of at most 20000 characters", field="description")
    choices = _visibility_and_analyses(body)
    if isinstance(choices, JsonResponse):
        return choices
    visibility, analyses = choices
    try:
        tags = labels.parse_tags(body.get("tags"))
    except ValueError as problem:
        return error(400, str(problem), field="tags")
    try:
        definition = SweepDefinition.from_dict({key: body[key] for key in ("base_spec", "grid", "points", "seeds")
                                                if key in body})
        sweep = services.create_sweep(request.user, definition, name.strip(), description=description, tags=tags,
                                      visibility=visibility, analyses=analyses)
    except SpecError as problem:
        return error(400, problem.message, field=problem.field)
    return JsonResponse(sweep_json(sweep, request.user, detail=True), status=201)


@api_view(("GET",))
def sweep_detail(request, sweep_id: int):
    return JsonResponse(sweep_json(access.sweep_for(request.user, sweep_id), request.user, detail=True))


@api_view(("POST",))
def sweep_cancel(request, sweep_id: int):
    sweep = access.sweep_for(request.user, sweep_id, change=True)
    services.cancel_sweep(sweep)
    return JsonResponse(sweep_json(sweep, request.user))
