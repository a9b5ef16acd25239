"""Thin views: parse the request, call frontend.queries / services / charts, render."""
from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from frontend import (
    access,
    catalog,
    charts,
    exports,
    listeners,
    listing,
    live,
    queries,
    reproductions,
    services,
    verdict_table,
)
from frontend.forms import AnalysisForm, ExperimentForm, LabelsForm, labels_initial, spec_to_initial, widget_values
from frontend.labels import render_markdown
from frontend.metric_display import page_words
from frontend.models import AnalysisRun, ApiToken, Experiment, ReproductionRun
from frontend.presets import ARCHITECTURE_DEFAULTS, DEFAULT_PRESET, PRESETS
from frontend.queues import queue_for_spec
from trainer import reproduce
from trainer.analyses import ANALYSES
from trainer.events import TICKET
from trainer.rundir import RunDir, RunDirError
from trainer.spec import ExperimentSpec, SpecError
from trainer.tasks import Metric
from trainer.tickets import TicketError, save_ticket, ticket_payload


def _error_page(request, status: int, title: str, message: str) -> HttpResponse:
    return render(request, "frontend/error.html", {"title": title, "message": message}, status=status)


def bad_request(request, exception=None):
    return _error_page(request, 400, "Bad request", str(exception or "The request could not be understood."))


def not_found(request, exception=None):
    return _error_page(request, 404, "Not found", "There is nothing at this address.")


def forbidden(request, exception=None):
    return _error_page(request, 403, "Not yours", str(exception or "Only the experiment's owner can do that."))


def server_error(request):
    return _error_page(request, 500, "Server error", "Something went wrong on the server; the log has the details.")


@dataclass(frozen=True)
class Viewer:
    """How the current request sees an experiment: its URL base, websocket path and rights."""
    base: str          # "/e/<id>/" or, through a share link, "/s/<token>/"
    socket_path: str
    can_change: bool
    via_share_link: bool


def experiment_view(change: bool = False, shareable: bool = False):
    """Resolve a view's experiment: by id for signed-in users (access rules; change=True needs the
    owner), or, for read-only `shareable` views, by a share-link token for anyone."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, experiment_id: int | None = None, token: str | None = None, **kwargs):
            if token is not None:
                if not shareable:
                    raise Http404("not available through a share link")
                experiment = access.shared_experiment(token)
                request.viewer = Viewer(f"/s/{token}/", f"/ws/s/{token}/", can_change=False, via_share_link=True)
            else:
                if not request.user.is_authenticated:
                    return redirect_to_login(request.get_full_path())
                experiment = access.experiment_for(request.user, experiment_id, change=change)
                request.viewer = Viewer(f"/e/{experiment.pk}/", f"/ws/e/{experiment.pk}/",
                                        can_change=access.can_change(request.user, experiment), via_share_link=False)
            return view(request, experiment, **kwargs)
        return wrapper
    return decorate


@require_GET
@login_required
def experiment_list(request):
    """Every experiment the user may see: filtered, searched, sorted, a page at a time (frontend.listing)."""
    try:
        query = listing.ListQuery.parse(request.GET)
    except listing.ListError as error:
        return _error_page(request, 400, "Bad list parameters", str(error))
    return render(request, "frontend/list.html", listing.list_context(request.user, query))


def _form_context(request, form: ExperimentForm) -> dict:
    installed = set(catalog.installed_dataset_names())
    presets = [{"key": p.key, "title": p.title, "note": p.note, "installed": p.dataset in installed,
                "dataset": p.dataset, "task": catalog.task_of_dataset_name(p.dataset)} for p in PRESETS.values()]
    return {
        "form": form, "datasets": catalog.dataset_choices(), "presets": presets,
        "can_download_datasets": access.can_download_datasets(request.user),
        "page_data": {
            # A preset sets every field; an architecture's defaults only the fields they name.
            "presets": {p.key: widget_values(p.spec().to_dict()) for p in PRESETS.values() if p.dataset in installed},
            "architecture_defaults": {model: widget_values(defaults)
                                      for model, defaults in ARCHITECTURE_DEFAULTS.items()},
            "layer_sizes": catalog.layer_sizes_by_model_and_dataset(),
            "tasks": {task["name"]: task for task in catalog.task_choices()},
        },
    }


@require_http_methods(["GET", "POST"])
@login_required
def new_experiment(request):
    if request.method == "POST":
        form = ExperimentForm(request.POST)
        if form.is_valid():
            experiment = services.create_experiment(
                form.spec, form.cleaned_data.get("preset", ""), form.cleaned_data.get("analyses", []),
                owner=request.user, visibility=form.cleaned_data["visibility"], name=form.cleaned_data["name"],
                description=form.cleaned_data["description"], tags=form.cleaned_data["tags"])
            return redirect("experiment_detail", experiment_id=experiment.pk)
        return render(request, "frontend/new.html", _form_context(request, form), status=400)
    key = request.GET.get("preset", DEFAULT_PRESET)
    preset = PRESETS.get(key)
    installed = set(catalog.installed_dataset_names())
    if preset is None or preset.dataset not in installed:
        reason = "no such preset" if preset is None else f"its dataset {preset.dataset} is not installed"
        return _error_page(request, 400, "Unknown preset", f"Preset {key!r} cannot be used: {reason}.")
    form = ExperimentForm(initial={**spec_to_initial(preset.spec()), "preset": preset.key})
    return render(request, "frontend/new.html", _form_context(request, form))


def _labels_context(experiment: Experiment, viewer: Viewer, labels_form: LabelsForm | None = None) -> dict:
    """The page head's name, rendered notes and tags, and for the owner the form that edits them."""
    tags = list(experiment.tags.all())
    if labels_form is None and viewer.can_change:
        labels_form = LabelsForm(initial=labels_initial(experiment, tags))
    return {"description_html": render_markdown(experiment.description), "tags": tags, "labels_form": labels_form}


def _result_context(experiment: Experiment, viewer: Viewer, bound_form: AnalysisForm | None = None,
                    labels_form: LabelsForm | None = None) -> dict:
    metric = experiment.metric
    rounds = queries.rounds_by_network(experiment)
    all_rows = queries.all_round_rows(experiment)  # one query for the bands and the verdict
    bands = queries.replicate_bands(experiment, all_rows)
    ticket_rounds = rounds[TICKET]
    remaining_by_round = {row["round"]: row["remaining_fraction"] for row in ticket_rounds}
    figures = [
        ("chart-sparsity-accuracy", charts.sparsity_vs_accuracy(rounds, bands, metric)),
        ("chart-early-stop", charts.early_stop_iterations(rounds)),
        ("chart-training-curves", charts.training_curves(queries.ticket_curves(experiment), remaining_by_round,
                                                         metric)),
    ]
    controls = [network for network in rounds if network != TICKET]
    round_table = [queries.round_table_row(row, [queries.matching_round(rounds[n], row["round"]) for n in controls],
                                           bands, metric) for row in ticket_rounds]
    mask_rounds = [row["round"] for row in ticket_rounds]
    return {
        "experiment": experiment, "charts": [(dom_id, charts.figure_json(figure)) for dom_id, figure in figures],
        "round_table": round_table, "controls": controls, "replicates": experiment.replicate_count,
        "no_early_stop": experiment.spec.get("validation_size") == 0,
        "best_ticket_label": _best_ticket_label(experiment, all_rows, metric),
        "metric": page_words(metric), "task_title": experiment.task.title,
        "verdict": verdict_table.verdict_section(all_rows, experiment.iterations_per_round, metric),
        "layer_table": queries.layer_table(ticket_rounds),
        "layer_type_table": queries.layer_type_table(ticket_rounds, experiment.task),
        "spec_json": json.dumps(experiment.spec, indent=2, sort_keys=True),
        "mask_rounds": mask_rounds, "mask_last_index": len(mask_rounds) - 1, "mask_networks": [TICKET] + controls,
        "has_results_file": bool(experiment.results_path) and Path(experiment.results_path).is_file(),
        "viewer": viewer, "visibility_choices": Experiment.Visibility.choices,
        "share_url": f"/s/{experiment.share_token}/" if experiment.visibility == Experiment.Visibility.LINK else "",
        "reproduction_badges": reproductions.badges(experiment.spec),
        "pieces": queries.pieces(experiment),
        **_labels_context(experiment, viewer, labels_form),
        **_analyses_context(experiment, viewer, bound_form, bands),
    }


def _analyses_context(experiment: Experiment, viewer: Viewer, bound_form: AnalysisForm | None = None,
                      bands: dict | None = None) -> dict:
    """The "Analyses" section: per analysis its runs (charts of finished ones) and its parameter form."""
    runs_by_name = queries.analysis_runs_by_name(experiment)
    imp_band = (bands if bands is not None else queries.replicate_bands(experiment)).get(TICKET)
    can_run = experiment.status == Experiment.Status.FINISHED and bool(experiment.run_dir) and viewer.can_change
    sections = []
    for name, analysis in ANALYSES.items():
        if experiment.task.name not in analysis.tasks and name not in runs_by_name:
            continue  # a study of image classifiers is not offered on a language model's or an agent's page
        defaults = analysis.validate({})
        runs = []
        for run in runs_by_name.get(name, []):
            figures = (charts.analysis_figures(analysis.chart, run.result, imp_band)
                       if run.status == AnalysisRun.Status.FINISHED else [])
            runs.append({"run": run, "params_label": queries.params_label(run.params, defaults),
                         "warnings": charts.analysis_warnings(analysis.chart, run.result) if run.result else [],
                         "charts": [{"dom_id": f"analysis-{run.pk}-{item['id']}", "caption": item["caption"],
                                     "figure_json": charts.figure_json(item["figure"])} for item in figures]})
        form = bound_form if bound_form is not None and bound_form.analysis.name == name else None
        sections.append({"name": name, "title": analysis.title, "description": analysis.description, "runs": runs,
                         "form": form or (AnalysisForm(analysis, experiment) if can_run else None)})
    active = queries.analyses_active(experiment, [run for runs in runs_by_name.values() for run in runs])
    return {"analysis_sections": sections, "analyses_active": active, "analyses_can_run": can_run, "viewer": viewer}


def _best_ticket_label(experiment: Experiment, all_rows: list[dict], metric: Metric) -> str:
    """all_rows: queries.all_round_rows; with replicates the best ticket is judged on their mean per round."""
    ticket_rows = [row for row in all_rows if row["network"] == TICKET]
    ticket = queries.best_ticket(queries.mean_over_replicates(ticket_rows, experiment.replicate_count), metric)
    return queries.best_ticket_label(ticket, metric) if ticket else ""


def _live_context(experiment: Experiment, viewer: Viewer, labels_form: LabelsForm | None = None) -> dict:
    state = live.live_state(experiment.pk)
    queue_notice = ""
    if experiment.status == Experiment.Status.QUEUED:
        queue_notice = listeners.unserved_queue_notice(queue_for_spec(experiment.spec), listeners.listening_queues())
    return {"experiment": experiment, "progress": state["progress"], "live_state": state, "viewer": viewer,
            "spec_json": json.dumps(experiment.spec, indent=2, sort_keys=True), "queue_notice": queue_notice,
            "reproduction_badges": reproductions.badges(experiment.spec),
            **_labels_context(experiment, viewer, labels_form)}


@require_GET
@experiment_view(shareable=True)
def experiment_detail(request, experiment: Experiment):
    """The permalink: a live page while running, the result page once done (the live page turns into it)."""
    if experiment.is_done:
        return render(request, "frontend/result.html", _result_context(experiment, request.viewer))
    return render(request, "frontend/live.html", _live_context(experiment, request.viewer))


@require_GET
@experiment_view(shareable=True)
def experiment_result_fragment(request, experiment: Experiment):
    """The result page's content alone, fetched by the live page when the run ends."""
    if not experiment.is_done:
        return _error_page(request, 409, "Still running", "The results are shown once the run has ended.")
    return render(request, "frontend/_result_content.html", _result_context(experiment, request.viewer))


@require_GET
@experiment_view(shareable=True)
def experiment_state(request, experiment: Experiment):
    return JsonResponse(live.live_state(experiment.pk))


@require_GET
@experiment_view(shareable=True)
def results_download(request, experiment: Experiment):
    path = Path(experiment.results_path) if experiment.results_path else None
    if path is None or not path.is_file():
        return _error_page(request, 404, "No results yet", "results.json is written when the run ends.")
    return FileResponse(path.open("rb"), as_attachment=True, filename=f"experiment_{experiment.pk}_results.json",
                        content_type="application/json")


@require_GET
@experiment_view(shareable=True)
def export_csv(request, experiment: Experiment, what: str):
    text = exports.metrics_csv(experiment) if what == "metrics" else exports.curves_csv(experiment)
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="experiment_{experiment.pk}_{what}.csv"'
    return response


@require_GET
@experiment_view(shareable=True)
def export_ticket(request, experiment: Experiment, round_index: int):
    """A round's mask and θk as a file `python -m trainer retrain` trains again."""
    replicate = request.GET.get("replicate", "0")
    if not replicate.isdigit() or int(replicate) > 64:
        return _error_page(request, 400, "Bad replicate",
                           f"replicate must be a small whole number (got {replicate[:20]!r}).")
    try:
        payload = ticket_payload(RunDir.open(experiment.run_dir), round_index, int(replicate))
    except (TicketError, RunDirError, OSError) as error:
        return _error_page(request, 404, "No such ticket", str(error))
    buffer = io.BytesIO()
    save_ticket(payload, buffer)
    response = HttpResponse(buffer.getvalue(), content_type="application/octet-stream")
    response["Content-Disposition"] = (f'attachment; filename="experiment_{experiment.pk}_round_{round_index}'
                                       f'_replicate_{replicate}_ticket.pt"')
    return response


@require_GET
@experiment_view(shareable=True)
def mask_data(request, experiment: Experiment, round_index: int):
    network = request.GET.get("network", TICKET)
    if not network.replace("_", "").isalnum() or len(network) > 30:
        return JsonResponse({"error": f"bad network name {network!r}"}, status=400)
    try:
        masks, input_shape = services.round_mask(experiment, round_index, network)
    except services.NotAvailable as error:
        return JsonResponse({"error": str(error)}, status=404)
    payload = charts.figures_payload(charts.mask_figures(masks, round_index, input_shape))
    return HttpResponse(payload, content_type="application/json")


@require_POST
@experiment_view(change=True)
def cancel_experiment(request, experiment: Experiment):
    if not experiment.is_done:
        services.request_cancel(experiment)
    return redirect("experiment_detail", experiment_id=experiment.pk)


@require_POST
@experiment_view(change=True)
def requeue_experiment(request, experiment: Experiment):
    """Run a failed or cancelled experiment again: it resumes after its last finished round."""
    if experiment.status not in (Experiment.Status.FAILED, Experiment.Status.CANCELLED):
        return _error_page(request, 409, "Not re-queueable",
                           f"Only failed or cancelled experiments are re-queued; this one is {experiment.status}.")
    services.requeue(experiment)
    return redirect("experiment_detail", experiment_id=experiment.pk)


@require_POST
@experiment_view(change=True)
def delete_experiment(request, experiment: Experiment):
    """Delete the row (rounds, curves, analyses). The run directory stays: other experiments with
    the same spec share it, and it is the CLI's too."""
    if not experiment.is_done:
        return _error_page(request, 409, "Still running", "Cancel the run before deleting the experiment.")
    experiment.delete()
    return redirect("experiment_list")


@require_POST
@experiment_view(change=True)
def set_visibility(request, experiment: Experiment):
    visibility = request.POST.get("visibility", "")
    if visibility not in Experiment.Visibility.values:
        return _error_page(request, 400, "Unknown visibility",
                           f"Choose one of {', '.join(Experiment.Visibility.values)} (got {visibility[:40]!r}).")
    Experiment.objects.filter(pk=experiment.pk).update(visibility=visibility)
    return redirect("experiment_detail", experiment_id=experiment.pk)


@require_POST
@experiment_view(change=True)
def edit_labels(request, experiment: Experiment):
    """The owner renames an experiment, rewrites its notes or retags it; a bad value: the page again, 400,
    with the message beside the field."""
    form = LabelsForm(request.POST)
    if not form.is_valid():
        if experiment.is_done:
            return render(request, "frontend/result.html",
                          _result_context(experiment, request.viewer, labels_form=form), status=400)
        return render(request, "frontend/live.html", _live_context(experiment, request.viewer, labels_form=form),
                      status=400)
    services.set_labels(experiment, form.cleaned_data["name"], form.cleaned_data["description"],
                        form.cleaned_data["tags"])
    return redirect("experiment_detail", experiment_id=experiment.pk)


@require_POST
@experiment_view(change=True)
def run_analysis(request, experiment: Experiment, name: str):
    """Validate one analysis's parameters (errors beside their fields, 400) and queue it."""
    analysis = ANALYSES.get(name)
    if analysis is None:
        return _error_page(request, 404, "No such analysis", f"There is no analysis {name!r}.")
    if experiment.status != Experiment.Status.FINISHED or not experiment.run_dir:
        return _error_page(request, 409, "Not finished", "Analyses run on a finished experiment's run directory.")
    form = AnalysisForm(analysis, experiment, request.POST)
    if not form.is_valid():
        return render(request, "frontend/result.html", _result_context(experiment, request.viewer, bound_form=form),
                      status=400)
    services.request_analysis(experiment, name, form.params)
    return redirect(f"{reverse('experiment_detail', args=[experiment.pk])}#analysis-{name}")


@require_GET
@experiment_view(shareable=True)
def analyses_state(request, experiment: Experiment):
    """What the Analyses section polls every 2 s while an analysis is queued or running."""
    runs = list(experiment.analysis_runs.order_by("created_at", "id"))
    return JsonResponse({"runs": [queries.analysis_run_row(run) for run in runs],
                         "active": queries.analyses_active(experiment, runs)})


@require_GET
@experiment_view(shareable=True)
def analyses_fragment(request, experiment: Experiment):
    """The Analyses section alone, re-fetched when a polled analysis has ended."""
    return render(request, "frontend/_analyses.html",
                  {"experiment": experiment, **_analyses_context(experiment, request.viewer)})


@require_POST
@experiment_view(change=True)
def cancel_analysis(request, experiment: Experiment, analysis_run_id: int):
    analysis_run = get_object_or_404(AnalysisRun, pk=analysis_run_id, experiment=experiment)
    if not analysis_run.is_done:
        services.request_analysis_cancel(analysis_run)
    return redirect(f"{reverse('experiment_detail', args=[experiment.pk])}#analysis-{analysis_run.name}")


@require_http_methods(["GET", "POST"])
@login_required
def api_tokens(request):
    """The user's API keys: make one (shown once), revoke one."""
    new_key = ""
    if request.method == "POST":
        if "revoke" in request.POST:
            revoke = request.POST["revoke"]
            if revoke.isdigit():
                ApiToken.objects.filter(user=request.user, pk=int(revoke)).delete()
        else:
            _, new_key = ApiToken.issue(request.user, request.POST.get("label", "")[:100])
    tokens = ApiToken.objects.filter(user=request.user).order_by("-created_at")
    return render(request, "frontend/api_tokens.html", {"tokens": tokens, "new_key": new_key})


def _reproductions_context(request) -> dict:
    state = reproductions.state()
    return {"cards": reproductions.cards(request.user), "active": state["active"],
            "can_run": access.can_run_reproductions(request.user), "budgets": reproductions.budget_choices(),
            "default_budget": reproductions.DEFAULT_BUDGET, "check_count": len(reproduce.CHECKS)}


@require_GET
@login_required
def reproductions_page(request):
    """The papers' claims as checks (trainer.reproduce): each one's latest verdict, chart and source."""
    return render(request, "frontend/reproductions.html", _reproductions_context(request))


@require_GET
@login_required
def reproductions_fragment(request):
    """The checks' section alone, re-fetched by the page when a polled run has ended."""
    return render(request, "frontend/_reproductions.html", _reproductions_context(request))


@require_GET
@login_required
def reproductions_state(request):
    """What the Reproductions page polls every 2 s while a check is queued or running."""
    return JsonResponse(reproductions.state())


def reproduction_action(view):
    """A POST by a signed-in user who may run checks; anything else is a 4xx page that says why."""
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method != "POST":
            response = _error_page(request, 405, "Use the page's buttons",
                                   "This address only takes the Reproductions page's form (POST).")
            response["Allow"] = "POST"
            return response
        if not access.can_run_reproductions(request.user):
            return _error_page(request, 403, "Sign in first", "Sign in to run or cancel reproduction checks.")
        return view(request, *args, **kwargs)
    return wrapper


def _posted_budget(request) -> str | None:
    budget = request.POST.get("budget", reproductions.DEFAULT_BUDGET)
    return budget if budget in reproduce.BUDGETS else None


def _unknown_budget(request) -> HttpResponse:
    return _error_page(request, 400, "Unknown budget", f"Choose one of {', '.join(reproduce.BUDGETS)} "
                                                       f"(got {request.POST.get('budget', '')[:40]!r}).")


@reproduction_action
def run_reproduction(request, name: str):
    if name not in reproduce.CHECKS:
        return _error_page(request, 404, "No such check", f"There is no reproduction check {name[:60]!r}.")
    budget = _posted_budget(request)
    if budget is None:
        return _unknown_budget(request)
    services.request_reproduction(name, budget, request.user)
    return redirect(f"{reverse('reproductions')}#check-{name}")


@reproduction_action
def run_all_reproductions(request):
    budget = _posted_budget(request)
    if budget is None:
        return _unknown_budget(request)
    for name in reproduce.CHECKS:
        services.request_reproduction(name, budget, request.user)
    return redirect("reproductions")


@reproduction_action
def cancel_reproduction(request, run_id: int):
    run = ReproductionRun.objects.filter(pk=run_id).first()
    if run is None:
        return _error_page(request, 404, "No such run", f"There is no reproduction run {run_id}.")
    if not access.can_cancel_reproduction(request.user, run):
        return _error_page(request, 403, "Not yours", "Only whoever queued a check (or a superuser) cancels it.")
    if not run.is_done:
        services.request_reproduction_cancel(run)
    return redirect(f"{reverse('reproductions')}#check-{run.check_name}")


COMPARE_MIN, COMPARE_MAX = 2, 6


@require_GET
@login_required
def compare(request):
    """2-6 experiments: their tickets' sparsity-vs-accuracy curves on one chart, their specs side by
    side with the differing fields marked. ?ids=3,5,8 (or ids=3&ids=5...)."""
    raw = [part for value in request.GET.getlist("ids") for part in value.split(",") if part.strip()]
    if not all(part.strip().isdigit() for part in raw):
        return _error_page(request, 400, "Bad selection", "ids must be experiment numbers, e.g. ?ids=3,5.")
    ids = list(dict.fromkeys(int(part) for part in raw))
    if not COMPARE_MIN <= len(ids) <= COMPARE_MAX:
        return _error_page(request, 400, "Pick 2 to 6 experiments",
                           f"Compare takes {COMPARE_MIN} to {COMPARE_MAX} experiments; {len(ids)} were picked.")
    experiments = [access.experiment_for(request.user, experiment_id) for experiment_id in ids]
    task_names = {experiment.task.name for experiment in experiments}
    if len(task_names) > 1:
        return _error_page(request, 400, "Experiments of different tasks",
                           "One chart cannot hold " + " and ".join(sorted({e.metric.label for e in experiments}))
                           + "; compare experiments of one task (" + ", ".join(sorted(task_names)) + ").")
    metric = experiments[0].metric
    round_rows = {e.pk: queries.all_round_rows(e) for e in experiments}  # one query each: bands and best ticket
    series = [{"id": e.pk, "label": f"#{e.pk} {e.model_name} on {e.dataset_name}",
               "rounds": queries.rounds_by_network(e)[TICKET],
               "band": queries.replicate_bands(e, round_rows[e.pk]).get(TICKET)}
              for e in experiments]
    figure = charts.compare_sparsity_vs_accuracy(series, metric)
    return render(request, "frontend/compare.html", {
        "experiments": experiments, "figure_json": charts.figure_json(figure),
        "spec_rows": queries.spec_comparison(experiments), "metric": page_words(metric),
        "best_labels": [_best_ticket_label(e, round_rows[e.pk], metric) or "–" for e in experiments]})


MAX_SPEC_FILE_BYTES = 64 * 1024


@require_POST
@login_required
def download_dataset(request, name: str):
    """An admin's Download button on the datasets panel: queue the download, back to the panel."""
    if not access.can_download_datasets(request.user):
        raise PermissionDenied("Only an admin (staff) account downloads datasets to this server.")
    if name not in catalog.downloadable_dataset_names():
        raise Http404(f"there is no downloadable dataset {name!r}")
    try:
        services.request_dataset_download(name)
    except services.NotQueued as error:
        return _error_page(request, 503, "Download not queued", f"{name} could not be queued: {error}.")
    return redirect(reverse("new_experiment") + "#field-dataset")


@require_POST
@login_required
def upload_spec(request):
    """A spec.json (from `python -m trainer`, results.json's "spec", or a colleague) fills in the
    new-experiment form for review; nothing is queued until that form is submitted."""
    upload = request.FILES.get("spec_file")
    if upload is None:
        return _error_page(request, 400, "No file", "Choose a spec file (JSON) to load.")
    if upload.size > MAX_SPEC_FILE_BYTES:
        return _error_page(request, 400, "File too large",
                           f"{upload.name} is {upload.size} bytes; a spec file is at most {MAX_SPEC_FILE_BYTES}.")
    try:
        text = upload.read().decode("utf-8")
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("spec"), dict) and "rounds" in data:
            data = data["spec"]  # a results.json: use the spec it was run with
        spec = ExperimentSpec.from_dict(data)
    except UnicodeDecodeError:
        return _error_page(request, 400, "Not a text file", f"{upload.name} is not UTF-8 text; a spec file is JSON.")
    except ValueError as error:  # json.JSONDecodeError and SpecError are both ValueErrors
        where = f"{error.field}: {error.message}" if isinstance(error, SpecError) else f"not valid JSON ({error})"
        return _error_page(request, 400, "Not a valid spec", f"{upload.name}: {where}")
    form = ExperimentForm(initial=spec_to_initial(spec))
    return render(request, "frontend/new.html", _form_context(request, form))
