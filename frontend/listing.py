"""The experiment list page: filters, a name search, sorting by any column and pages, over what the viewer
may see (frontend.access.visible_to).

It stays fast with tens of thousands of experiments because a request reads only its page: one COUNT,
the page's rows with their owners, their tags (one query) and the queue places of its queued rows. No
round is read: the best ticket is stored on the experiment's row (frontend.records). A bad parameter is
a ListError whose message the page shows (400); a page number past the end shows the last page.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import F, Q, QuerySet

from frontend import catalog, listeners
from frontend.access import can_change, visible_to
from frontend.fair_share import queue_positions
from frontend.models import Experiment, SweepPoint, Tag
from frontend.progress import progress_of
from frontend.queries import best_ticket_label, progress_label
from frontend.queues import queue_for_spec
from trainer import datasets, models, tasks

PAGE_SIZE = 50
# sort key (the ?sort= value, "-" in front for descending) -> column
SORT_COLUMNS = {"id": "id", "name": "name", "status": "status", "owner": "owner__username", "model": "model_name",
                "dataset": "dataset_name", "best": "best_ticket_remaining", "created": "created_at"}
DEFAULT_SORT = "-created"
FILTERS = ("q", "status", "owner", "model", "dataset", "task", "tag", "sweep")
NO_OWNER = "-"  # the owner filter's value for imported experiments, which have none
MAX_TEXT = 200


class ListError(ValueError):
    """A list parameter that cannot be used; the message says which and what it may be."""


@dataclass(frozen=True)
class ListQuery:
    """What one list request asks for: filters (only those given), sort key and page number."""

    filters: dict[str, str] = field(default_factory=dict)
    sort: str = DEFAULT_SORT
    page: int = 1

    @classmethod
    def parse(cls, params) -> ListQuery:
        """From the request's GET parameters; raises ListError for a value that cannot be used."""
        filters = {}
        for name in FILTERS:
            value = " ".join(str(params.get(name, "")).split())
            if not value:
                continue
            if len(value) > MAX_TEXT:
                raise ListError(f"{name} is at most {MAX_TEXT} characters")
            filters[name] = _checked_filter(name, value)
        sort = params.get("sort") or DEFAULT_SORT
        if sort.removeprefix("-") not in SORT_COLUMNS:
            raise ListError(f"sort must be one of {', '.join(SORT_COLUMNS)} (with '-' in front for descending), "
                            f"not {sort[:40]!r}")
        page = params.get("page") or "1"
        if not page.isdigit() or int(page) < 1:
            raise ListError(f"page must be a whole number from 1, not {page[:40]!r}")
        return cls(filters, sort, min(int(page), 10**9))

    def querystring(self, **changes) -> str:
        """'?tag=x&sort=name&page=2': this query's parameters with `changes` (None drops one); a new filter or
        sort starts again at page 1 unless a page is given."""
        values = {**self.filters, "sort": self.sort, **changes}
        if values["sort"] == DEFAULT_SORT:
            values["sort"] = None
        if values.get("page") == 1:
            values["page"] = None
        items = [(name, value) for name, value in values.items() if value not in (None, "")]
        return "?" + urlencode(items) if items else "?"

    def sort_link(self, key: str) -> str:
        """A column header's link: sort by it, or flip the direction when it is the sort already."""
        current = self.sort.removeprefix("-")
        descending_first = key in ("created", "id")  # newest first is what one wants first
        if current == key:
            return self.querystring(sort=key if self.sort.startswith("-") else f"-{key}")
        return self.querystring(sort=f"-{key}" if descending_first else key)


def _checked_filter(name: str, value: str) -> str:
    if name == "status" and value not in Experiment.Status.values:
        raise ListError(f"status must be one of {', '.join(Experiment.Status.values)}, not {value[:40]!r}")
    if name == "task" and value not in catalog.WEB_TASKS:
        raise ListError(f"task must be one of {', '.join(catalog.WEB_TASKS)}, not {value[:40]!r}")
    if name == "sweep" and not value.removeprefix("#").isdigit():
        raise ListError(f"sweep is a sweep's number, not {value[:40]!r}")
    if name == "tag":
        return value.lower().replace(" ", "-")
    return value.removeprefix("#") if name == "sweep" else value


def dataset_names_of_task(task_name: str) -> list[str]:
    return [name for name, entry in datasets.DATASETS.items() if entry.info.task == task_name]


def filtered(user, filters: dict[str, str]) -> QuerySet:
    """The experiments `user` may see that pass every filter."""
    rows = Experiment.objects.filter(visible_to(user))
    if "q" in filters:
        text = filters["q"]
        number = text.removeprefix("#")
        rows = rows.filter(Q(name__icontains=text) | (Q(pk=int(number)) if number.isdigit() else Q(pk__in=[])))
    if "status" in filters:
        rows = rows.filter(status=filters["status"])
    if "owner" in filters:
        owner = filters["owner"]
        rows = rows.filter(owner__isnull=True) if owner == NO_OWNER else rows.filter(owner__username=owner)
    if "model" in filters:
        rows = rows.filter(model_name=filters["model"])
    if "dataset" in filters:
        rows = rows.filter(dataset_name=filters["dataset"])
    if "task" in filters:
        task = filters["task"]
        if task == tasks.CLASSIFICATION.name:  # an unknown dataset counts as classification (models.task_of_dataset)
            other = [name for name, entry in datasets.DATASETS.items() if entry.info.task != task]
            rows = rows.exclude(dataset_name__in=other)
        else:
            rows = rows.filter(dataset_name__in=dataset_names_of_task(task))
    if "tag" in filters:
        rows = rows.filter(tags__name=filters["tag"])  # tag names are unique: no duplicate rows
    if "sweep" in filters:
        sweep_id = int(filters["sweep"])
        rows = rows.filter(Q(sweep_id=sweep_id) | Q(pk__in=SweepPoint.objects.filter(sweep_id=sweep_id)
                                                        .values("experiment_id")))
    return rows


def ordered(rows: QuerySet, sort: str) -> QuerySet:
    """Sorted by one column, ties by id; experiments without a value (no owner, no best ticket) last."""
    descending = sort.startswith("-")
    column = F(SORT_COLUMNS[sort.removeprefix("-")])
    tie = F("id")
    return rows.order_by(column.desc(nulls_last=True) if descending else column.asc(nulls_last=True),
                         tie.desc() if descending else tie.asc())


def row_of(experiment: Experiment, user, query: ListQuery, position: int | None, listening: set[str] | None) -> dict:
    progress = progress_of(experiment)
    ticket = None
    if experiment.best_ticket_remaining is not None:
        ticket = {"remaining_fraction": experiment.best_ticket_remaining, "round": experiment.best_ticket_round,
                  "reported_test_metric": experiment.best_ticket_metric, "replicates": experiment.replicate_count}
    queued = experiment.status == Experiment.Status.QUEUED
    queue = queue_for_spec(experiment.spec)
    return {"experiment": experiment, "progress": progress, "best_ticket": ticket,
            "owner": experiment.owner.get_username() if experiment.owner else "",
            "mine": can_change(user, experiment),
            "tags": [(tag.name, query.querystring(tag=tag.name)) for tag in experiment.tags.all()],
            "queue": queue, "queue_position": position,
            "queue_notice": listeners.unserved_queue_notice(queue, listening) if queued else "",
            "progress_label": progress_label(progress) if experiment.status == Experiment.Status.RUNNING else "",
            "best_ticket_label": best_ticket_label(ticket, experiment.metric) if ticket else ""}


def page_of(user, query: ListQuery) -> dict:
    """The page's rows and what its navigation needs."""
    rows = ordered(filtered(user, query.filters), query.sort).select_related("owner").prefetch_related("tags")
    paginator = Paginator(rows, PAGE_SIZE)
    page = paginator.page(min(query.page, paginator.num_pages))
    experiments = list(page.object_list)
    waiting = [e for e in experiments if e.status == Experiment.Status.QUEUED]
    positions = queue_positions(waiting) if waiting else {}
    listening = listeners.listening_queues() if waiting else None
    return {"rows": [row_of(e, user, query, positions.get(e.pk), listening) for e in experiments],
            "page": page, "paginator": paginator, "total": paginator.count}


def filter_choices() -> dict:
    """The filter form's options: registries for models, datasets and tasks, the accounts, the tags."""
    return {"statuses": Experiment.Status.values,
            "owners": list(get_user_model().objects.order_by("username").values_list("username", flat=True)),
            "models": sorted(models.MODELS), "datasets": sorted(datasets.DATASETS),
            "tasks": [(name, tasks.get(name).title) for name in catalog.WEB_TASKS],
            "tags": list(Tag.objects.values_list("name", flat=True))}


def list_context(user, query: ListQuery) -> dict:
    """Everything list.html shows."""
    page = page_of(user, query)
    columns = [(key, label, query.sort_link(key), _direction(query.sort, key)) for key, label in (
        ("id", "#"), ("name", "name"), ("status", "status"), ("owner", "owner"), ("model", "architecture"),
        ("dataset", "dataset"), ("best", "best ticket"), ("created", "created"))]
    pages = page["page"]
    return {**page, "query": query, "filters": query.filters, "choices": filter_choices(), "columns": columns,
            "no_owner": NO_OWNER,
            "first_link": query.querystring(page=1), "last_link": query.querystring(page=pages.paginator.num_pages),
            "previous_link": query.querystring(page=pages.previous_page_number()) if pages.has_previous() else "",
            "next_link": query.querystring(page=pages.next_page_number()) if pages.has_next() else ""}


def _direction(sort: str, key: str) -> str:
    if sort.removeprefix("-") != key:
        return ""
    return "descending" if sort.startswith("-") else "ascending"
