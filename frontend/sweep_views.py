"""The sweep pages: the list of the viewer's sweeps, the new-sweep form (with a preview of its points), a
sweep's page (progress of every point, one row per configuration, its charts; polled while points run),
cancel, and CSV exports. Thin like frontend.views: parse, call services / sweep_results / charts, render."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from frontend import access, charts, exports, services, sweep_results
from frontend.forms import SweepForm, spec_to_initial
from frontend.labels import render_markdown
from frontend.metric_display import page_words, shown
from frontend.models import Sweep
from frontend.presets import DEFAULT_PRESET, PRESETS
from frontend.views import _error_page, _form_context
from trainer.sweeps import config_label, sweepable_fields


@require_GET
@login_required
def sweep_list(request):
    sweeps = (Sweep.objects.filter(access.visible_to(request.user)).select_related("owner")
              .prefetch_related("tags").annotate(point_count=Count("sweep_points"))[:500])
    return render(request, "frontend/sweep_list.html", {"sweeps": sweeps})


def _new_sweep_context(request, form: SweepForm, preview: bool = False) -> dict:
    fields = [{"name": name, "kind": info["kind"], "help": info["help"],
               "list": info["kind"].startswith(("A,B", "NAME="))} for name, info in sweepable_fields().items()]
    return {**_form_context(request, form), "sweepable": fields, "max_points": settings.LOTTERYWEB_MAX_SWEEP_POINTS,
            "grid_rows": form.grid_rows or [("", "")], "preview": preview and form.definition is not None,
            "preview_points": [{"label": config_label(point.config), "seed": point.seed_index}
                               for point in form.points] if preview else []}


@require_http_methods(["GET", "POST"])
@login_required
def new_sweep(request):
    """GET: the form (base spec from a preset). POST with "preview": the count and points, nothing created;
    POST: create the sweep and go to its page. Refusals (size limit, a bad value) come back beside the form."""
    if request.method == "POST":
        form = SweepForm(request.POST)
        valid = form.is_valid()
        if valid and "preview" not in request.POST:
            data = form.cleaned_data
            sweep = services.create_sweep(request.user, form.definition, data["sweep_name"],
                                          description=data.get("description", ""), tags=data.get("tags", []),
                                          visibility=data["visibility"], preset=data.get("preset", ""),
                                          analyses=data.get("analyses", []))
            return redirect("sweep_detail", sweep_id=sweep.pk)
        return render(request, "frontend/sweep_new.html", _new_sweep_context(request, form, preview=valid),
                      status=200 if valid else 400)
    preset = PRESETS[DEFAULT_PRESET]
    form = SweepForm(initial={**spec_to_initial(preset.spec()), "preset": preset.key, "seeds": 1})
    return render(request, "frontend/sweep_new.html", _new_sweep_context(request, form))


def _parallel_choice(request) -> str:
    choice = request.GET.get("parallel", sweep_results.DEFAULT_PARALLEL_METRIC)
    return choice if choice in sweep_results.PARALLEL_METRICS else sweep_results.DEFAULT_PARALLEL_METRIC


def _sweep_context(request, sweep: Sweep) -> dict:
    points = sweep_results.points_of(sweep, request.user)
    metric = sweep_results.metric_of(points)
    table = sweep_results.configuration_table(sweep, points)
    fields = sweep_results.swept_fields(sweep)
    choice = _parallel_choice(request)
    entry = sweep_results.PARALLEL_METRICS[choice][0]
    values = [None if row["summary"][entry] is None else
              (100 * row["summary"][entry]["mean"] if entry == "best_remaining"
               else shown(row["summary"][entry]["mean"], metric)) for row in table]
    title = sweep_results.parallel_metric_title(choice, metric)
    figures = [("chart-sweep-sparsity", charts.sweep_sparsity_vs_metric(
        [{"label": row["label"], "curve": row["summary"]["curve"]} for row in table], metric)),
               ("chart-sweep-parallel", charts.sweep_parallel_coordinates(table, fields, values, title))]
    counts = sweep_results.status_counts(points)
    done = sum(point["done"] for point in points)
    return {"sweep": sweep, "points": points, "table": table, "fields": fields, "counts": counts,
            "status": sweep_results.sweep_status(sweep, points), "done": done,
            "done_percent": 100 * done / len(points) if points else 0,
            "active": any(not point["done"] for point in points),
            "charts": [(dom_id, charts.figure_json(figure)) for dom_id, figure in figures],
            "metric": page_words(metric), "parallel_choice": choice,
            "parallel_choices": [(key, sweep_results.parallel_metric_title(key, metric))
                                 for key in sweep_results.PARALLEL_METRICS],
            "can_change": access.can_change(request.user, sweep),
            "description_html": render_markdown(sweep.description), "tags": [tag.name for tag in sweep.tags.all()]}


@require_GET
@login_required
def sweep_detail(request, sweep_id: int):
    sweep = access.sweep_for(request.user, sweep_id)
    return render(request, "frontend/sweep.html", _sweep_context(request, sweep))


@require_GET
@login_required
def sweep_section(request, sweep_id: int):
    """The page's polled section alone (progress, table, charts), re-fetched when a point ends."""
    sweep = access.sweep_for(request.user, sweep_id)
    return render(request, "frontend/_sweep_section.html", _sweep_context(request, sweep))


@require_GET
@login_required
def sweep_state(request, sweep_id: int):
    sweep = access.sweep_for(request.user, sweep_id)
    return JsonResponse(sweep_results.state(sweep_results.points_of(sweep)))


@require_POST
@login_required
def cancel_sweep(request, sweep_id: int):
    sweep = access.sweep_for(request.user, sweep_id, change=True)
    services.cancel_sweep(sweep)
    return redirect("sweep_detail", sweep_id=sweep.pk)


@require_GET
@login_required
def export_sweep_csv(request, sweep_id: int, what: str):
    sweep = access.sweep_for(request.user, sweep_id)
    points = sweep_results.points_of(sweep, request.user)
    metric = sweep_results.metric_of(points)
    table = sweep_results.configuration_table(sweep, points)  # fills each point's dense and best ticket
    fields = sweep_results.swept_fields(sweep)
    if what == "configurations":
        text = exports.sweep_configurations_csv(fields, table, metric)
    elif what == "points":
        text = exports.sweep_points_csv(fields, points, metric)
    else:
        return _error_page(request, 404, "No such export", "A sweep exports configurations.csv and points.csv.")
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="sweep_{sweep.pk}_{what}.csv"'
    return response
