"""Names, notes (sanitised Markdown) and tags of experiments: the rules, the forms, the API, the result page;
and the list page's filters, search, sorting and pages."""
import re
from html.parser import HTMLParser

import pytest

from frontend import labels, records, services
from frontend.models import Experiment, Sweep, SweepPoint
from tests.web.conftest import form_data
from trainer import datasets, events

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quick_password_hashing(settings):
    """These tests make accounts, never sign in with a password: skip the deliberately slow hash."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# ---- Markdown is rendered, and nothing runs ----------------------------------------------------

@pytest.mark.parametrize("hostile", [
    "<script>alert(1)</script>",
    "hello <script>alert(1)</script> world",
    '<img src="x" onerror="alert(1)">',
    "![pic](javascript:alert(1))",
    "![pic](https://example.org/tracker.png)",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<a href="https://example.org" onclick="alert(1)">x</a>',
    '<div style="background:url(javascript:alert(1))" onmouseover="alert(1)">x</div>',
    "<iframe src='https://example.org'></iframe>",
    "<svg onload=alert(1)>",
    '<p onclick="alert(1)">para</p>',
    "```\n</code><script>alert(1)</script>\n```",
    "<style>body{display:none}</style>",
    '[x](https://example.org "title" onclick="alert(1)")',
])
def test_markdown_lets_no_script_image_or_handler_through(hostile):
    html = str(labels.render_markdown(hostile))
    elements = parsed(html)
    assert {tag for tag, _ in elements} <= labels.ALLOWED_TAGS, html
    for _, attributes in elements:
        assert not any(name.startswith("on") or name in ("style", "src") for name in attributes), html
        href = attributes.get("href")
        assert href is None or href.strip().lower().startswith(("http:", "https:", "mailto:")), html


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def parsed(html: str) -> list[tuple[str, dict]]:
    """Every start tag of `html` as a browser's parser reads it: (tag, {attribute: value})."""
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser.found


def test_raw_html_is_shown_as_text_not_markup():
    html = str(labels.render_markdown("a <b>bold</b> claim"))
    assert "<b>" not in html and "&lt;b&gt;" in html


def test_ordinary_markdown_renders():
    html = str(labels.render_markdown(
        "# Result\n\n*Matches* **dense** at `20%`.\n\n- one\n- two\n\n[paper](https://arxiv.org/abs/1803.03635)\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n"))
    assert "<h1>Result</h1>" in html and "<em>Matches</em>" in html and "<strong>dense</strong>" in html
    assert "<code>20%</code>" in html and "<li>one</li>" in html and "<td>1</td>" in html
    link = re.search(r"<a [^>]*>paper</a>", html).group(0)
    assert 'href="https://arxiv.org/abs/1803.03635"' in link and 'rel="noopener noreferrer nofollow"' in link


# ---- names and tags: the rules -----------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("good, <bad>", "use letters, digits"),
    ("-leading", "use letters, digits"),
    ("x" * 51, "longer than 50"),
    (", ".join(f"t{i}" for i in range(21)), "at most 20 tags"),
    ([1, 2], "a tag is a string"),
])
def test_bad_tags_are_refused_with_a_message(text, message):
    with pytest.raises(ValueError, match=message):
        labels.parse_tags(text)


def test_tags_are_normalised():
    assert labels.parse_tags("Paper Fig3, baseline,\nbaseline ,") == ["baseline", "paper-fig3"]
    assert labels.parse_tags(["B", "a"]) == ["a", "b"]


def test_names_are_one_line_and_bounded():
    assert labels.clean_name("  two\n words  ") == "two words"
    with pytest.raises(ValueError, match="at most 200 characters"):
        labels.clean_name("n" * 201)
    with pytest.raises(ValueError, match="at most 20000 characters"):
        labels.clean_description("d" * 20_001)


def test_default_name_says_what_was_run_and_tells_siblings_apart():
    spec = {"model": "lenet_300_100", "dataset": "fashion_mnist", "pruning": {"fraction": 0.2, "rounds": 5}}
    name = labels.default_name(spec)
    assert re.fullmatch(r"lenet_300_100 · fashion_mnist · 20% × 5 rounds · [a-z]+-[a-z]+", name), name
    assert len({labels.default_name(spec) for _ in range(30)}) > 1
    assert labels.default_name({"pruning": {"fraction": 0.5, "rounds": 3, "schedule": "one_shot"}}).startswith(
        "experiment · one-shot 50% × 3 · ")
    assert labels.default_name({}).startswith("experiment · ")  # a partial spec (an old row) still gets one


# ---- creating: the form, the API, an import ----------------------------------------------------

def test_the_form_stores_name_notes_and_tags(client, queued):
    response = client.post("/new/", form_data(name="  My  run ", description="*why*", tags="Baseline, fig-3"))
    assert response.status_code == 302
    experiment = Experiment.objects.get()
    assert experiment.name == "My run" and experiment.description == "*why*"
    assert [tag.name for tag in experiment.tags.all()] == ["baseline", "fig-3"]


def test_the_form_generates_a_name_when_none_is_given(client, queued):
    assert client.post("/new/", form_data()).status_code == 302
    assert Experiment.objects.get().name.startswith("lenet_300_100 · synthetic · 20% × 2 rounds · ")


def test_the_form_refuses_bad_tags_beside_the_field(client, queued):
    response = client.post("/new/", form_data(tags="ok, not ok!"))
    assert response.status_code == 400 and not Experiment.objects.exists() and not queued
    assert "use letters, digits" in re.search(r'id="field-tags".*?<small', response.content.decode(), re.S).group(0)


def test_an_imported_run_gets_a_generated_name(finished_run):
    experiment, created, _ = services.import_run_directory(finished_run[1])
    assert created and experiment.name.startswith("lenet_300_100 · synthetic · ")


SPEC = {"dataset": "synthetic", "training": {"training_steps": "50it"}, "pruning": {"rounds": 1}}


def test_the_api_takes_and_shows_name_description_tags(api, queued):
    response = api("POST", "/api/experiments/", {"spec": SPEC, "name": "api run", "description": "**bold**",
                                                  "tags": ["b", "a"]})
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["name"] == "api run" and created["description"] == "**bold**" and created["tags"] == ["a", "b"]
    listed = api("GET", "/api/experiments/").json()["experiments"][0]
    assert listed["name"] == "api run" and listed["tags"] == ["a", "b"]
    generated = api("POST", "/api/experiments/", {"spec": SPEC}).json()
    assert generated["name"].startswith("lenet_300_100 · synthetic · 20% × 1 rounds · ") and generated["tags"] == []


@pytest.mark.parametrize("extra, field, message", [
    ({"tags": ["fine", "not fine!"]}, "tags", "use letters, digits"),
    ({"tags": "a, b", "name": "n" * 201}, "name", "at most 200"),
    ({"description": 5}, "description", "Markdown text"),
    ({"tags": [{"x": 1}]}, "tags", "a tag is a string"),
])
def test_the_api_refuses_bad_labels_with_the_field(api, queued, extra, field, message):
    response = api("POST", "/api/experiments/", {"spec": SPEC, **extra})
    assert response.status_code == 400 and response.json()["field"] == field
    assert message in response.json()["error"] and not Experiment.objects.exists() and not queued


def test_the_owner_relabels_through_the_api_and_nobody_else(api, finished_experiment, other_user):
    url = f"/api/experiments/{finished_experiment.pk}/"
    response = api("PATCH", url, {"tags": "x, y"})
    assert response.status_code == 200 and response.json()["tags"] == ["x", "y"]
    assert response.json()["name"] == finished_experiment.name  # what was not sent stays
    assert api("PATCH", url, {"colour": "red"}).status_code == 400
    assert api("PATCH", url, {"name": "n" * 300}).json()["field"] == "name"
    Experiment.objects.filter(pk=finished_experiment.pk).update(owner=other_user, visibility="team")
    assert api("PATCH", url, {"name": "mine now"}).status_code == 403
    assert Experiment.objects.get(pk=finished_experiment.pk).name != "mine now"


# ---- the result page: title, notes, tags, the owner's edit form --------------------------------

def test_the_result_page_shows_name_notes_and_tag_links(client, finished_experiment):
    services.set_labels(finished_experiment, "Ticket at 20%", "Looks **good**. <script>alert(1)</script>",
                        ["baseline"])
    html = client.get(f"/e/{finished_experiment.pk}/").content.decode()
    assert '<h1 id="experiment-name">Ticket at 20%</h1>' in html
    assert "Looks <strong>good</strong>." in html and "<script>alert(1)" not in html
    assert '<a class="tag" href="/?tag=baseline">baseline</a>' in html
    assert 'id="labels-form"' in html


def test_the_owner_edits_the_labels(client, finished_experiment):
    response = client.post(f"/e/{finished_experiment.pk}/labels/",
                           {"name": "renamed", "description": "notes", "tags": "a, b"})
    assert response.status_code == 302
    experiment = Experiment.objects.get(pk=finished_experiment.pk)
    assert (experiment.name, experiment.description) == ("renamed", "notes")
    assert [tag.name for tag in experiment.tags.all()] == ["a", "b"]
    client.post(f"/e/{finished_experiment.pk}/labels/", {"name": "", "description": "", "tags": ""})
    experiment.refresh_from_db()
    assert experiment.name.startswith("lenet_300_100 · synthetic · ") and not experiment.tags.exists()


@pytest.mark.parametrize("data, field, message", [
    ({"name": "x" * 201, "tags": ""}, "name", "at most 200 characters"),
    ({"name": "ok", "tags": "fine, <script>"}, "tags", "use letters, digits"),
])
def test_bad_labels_are_a_400_with_the_message_beside_the_field(client, finished_experiment, data, field, message):
    response = client.post(f"/e/{finished_experiment.pk}/labels/", data)
    assert response.status_code == 400
    block = re.search(rf'id="labels-field-{field}".*?<small', response.content.decode(), re.S).group(0)
    assert message in block
    assert Experiment.objects.get(pk=finished_experiment.pk).name == finished_experiment.name


def test_only_the_owner_edits_labels(client, finished_experiment, other_user):
    Experiment.objects.filter(pk=finished_experiment.pk).update(owner=other_user, visibility="team")
    assert client.post(f"/e/{finished_experiment.pk}/labels/", {"name": "mine"}).status_code == 403
    assert 'id="labels-form"' not in client.get(f"/e/{finished_experiment.pk}/").content.decode()
    Experiment.objects.filter(pk=finished_experiment.pk).update(visibility="private")
    assert client.post(f"/e/{finished_experiment.pk}/labels/", {"name": "mine"}).status_code == 404
    assert client.get(f"/e/{finished_experiment.pk}/labels/").status_code == 405
    assert Experiment.objects.get(pk=finished_experiment.pk).name == finished_experiment.name


def test_a_shared_page_is_read_only(anonymous_client, finished_experiment):
    services.set_labels(finished_experiment, "shared", "*notes*", ["baseline"])
    Experiment.objects.filter(pk=finished_experiment.pk).update(visibility="link")
    token = finished_experiment.share_token
    html = anonymous_client.get(f"/s/{token}/").content.decode()
    assert "<em>notes</em>" in html and '<span class="tag">baseline</span>' in html
    assert 'id="labels-form"' not in html and "/?tag=" not in html
    assert anonymous_client.post(f"/s/{token}/labels/", {"name": "x"}).status_code == 404
    assert anonymous_client.post(f"/e/{finished_experiment.pk}/labels/", {"name": "x"}).status_code == 302  # login


def test_storing_a_ticket_round_stores_the_best_ticket_on_the_row(finished_experiment):
    finished_experiment.refresh_from_db()
    assert finished_experiment.best_ticket_round is not None
    chain = [{"network": events.TICKET, "round": 0, "status": "finished", "remaining_fraction": 1.0,
              "early_stop": {"iteration": 10, "test_accuracy": 0.90}},
             {"network": events.TICKET, "round": 1, "status": "finished", "remaining_fraction": 0.5,
              "early_stop": {"iteration": 10, "test_accuracy": 0.895}},
             {"network": events.TICKET, "round": 2, "status": "finished", "remaining_fraction": 0.25,
              "early_stop": {"iteration": 10, "test_accuracy": 0.80}}]
    experiment = make(status="finished")
    for record in chain:
        records.store_record(experiment.pk, record)
    experiment.refresh_from_db()
    assert (experiment.best_ticket_round, experiment.best_ticket_remaining) == (1, 0.5)
    assert experiment.best_ticket_metric == pytest.approx(0.895)


def test_with_replicates_the_best_ticket_is_judged_on_their_mean_per_round(client, finished_experiment):
    """Replicate 0 alone would call round 2 a ticket (0.90 vs its dense 0.905); the mean of the two
    replicates (0.86 vs 0.905) does not, which is what the sparsity chart draws."""
    accuracies = {0: [0.905, 0.90, 0.90], 1: [0.905, 0.90, 0.82]}  # replicate -> rounds 0, 1, 2
    experiment = make(status="finished", owner=finished_experiment.owner)
    experiment.spec = {**experiment.spec, "replicates": 2}
    experiment.save()
    for replicate, values in accuracies.items():
        for round_index, accuracy in enumerate(values):
            records.store_record(experiment.pk, {
                "network": events.TICKET, "replicate": replicate, "round": round_index, "status": "finished",
                "remaining_fraction": 0.5 ** round_index, "early_stop": {"iteration": 10, "test_accuracy": accuracy}})
        experiment.refresh_from_db()
        if replicate == 0:  # replicate 1 has no round yet: no mean, no best ticket
            assert experiment.best_ticket_round is None
    assert (experiment.best_ticket_round, experiment.best_ticket_remaining) == (1, 0.5)
    assert experiment.best_ticket_metric == pytest.approx(0.90)
    client.force_login(experiment.owner)
    assert "mean test accuracy of 2 replicates (round 1)" in client.get("/").content.decode()


# ---- the list page -------------------------------------------------------------------------------

def make(name: str = "", owner=None, tags=(), **fields) -> Experiment:
    spec = {"model": fields.get("model_name", "lenet_300_100"), "dataset": fields.get("dataset_name", "mnist"),
            "pruning": {"fraction": 0.2, "rounds": 3}}
    fields = {"model_name": spec["model"], "dataset_name": spec["dataset"], "visibility": "team", **fields}
    experiment = Experiment.objects.create(spec=spec, name=name, owner=owner, **fields)
    labels.set_tags(experiment, list(tags))
    return experiment


def listed(client, query: str = "") -> list[int]:
    response = client.get("/" + query)
    assert response.status_code == 200, response.content[:500]
    return [int(pk) for pk in re.findall(r'<tr data-experiment-id="(\d+)"', response.content.decode())]


def task_dataset(task: str) -> str:
    return next(name for name, entry in datasets.DATASETS.items() if entry.info.task == task)


@pytest.fixture
def lab(user, other_user):
    """Five experiments of two owners, with what each filter picks out."""
    lm_dataset = task_dataset("language_modeling")
    rows = {
        "a": make("alpha heron", user, ["baseline"], status="finished", model_name="conv2", dataset_name="cifar10",
                  best_ticket_remaining=0.3),
        "b": make("bravo otter", other_user, ["baseline", "fig-3"], status="failed", best_ticket_remaining=0.1),
        "c": make("charlie heron", None, [], status="queued", model_name="conv4", dataset_name="cifar10"),
        "d": make("delta", user, ["fig-3"], status="running", dataset_name=lm_dataset, model_name="lm_net",
                  best_ticket_remaining=0.5),
        "private": make("echo secret", other_user, ["baseline"], status="finished", visibility="private"),
    }
    for minutes, key in enumerate(["a", "b", "c", "d", "private"]):  # created in this order, a minute apart
        Experiment.objects.filter(pk=rows[key].pk).update(
            created_at=rows["a"].created_at.replace(year=2030, minute=minutes))
    return {key: experiment.pk for key, experiment in rows.items()}


def test_the_list_shows_what_the_viewer_may_see_newest_first(client, lab):
    assert listed(client) == [lab["d"], lab["c"], lab["b"], lab["a"]]


@pytest.mark.parametrize("query, expected", [
    ("?status=finished", ["a"]),
    ("?status=queued", ["c"]),
    ("?owner=alice", ["d", "a"]),
    ("?owner=bob", ["b"]),
    ("?owner=-", ["c"]),
    ("?owner=nobody", []),
    ("?model=conv4", ["c"]),
    ("?dataset=cifar10", ["c", "a"]),
    ("?task=classification", ["c", "b", "a"]),
    ("?task=language_modeling", ["d"]),
    ("?task=reinforcement_learning", []),
    ("?tag=baseline", ["b", "a"]),
    ("?tag=FIG-3", ["d", "b"]),
    ("?q=heron", ["c", "a"]),
    ("?q=HERON&status=finished", ["a"]),
    ("?q=secret", []),  # someone else's private experiment stays hidden from every filter
    ("?tag=baseline&owner=bob", ["b"]),
])
def test_each_filter_and_the_search(client, lab, query, expected):
    assert listed(client, query) == [lab[key] for key in expected]


def test_search_by_number(client, lab):
    assert listed(client, f"?q=%23{lab['b']}") == [lab["b"]]


def test_the_sweep_filter_finds_created_and_reused_experiments(client, lab, user):
    sweep = Sweep.objects.create(owner=user, name="s", base_spec={})
    Experiment.objects.filter(pk=lab["a"]).update(sweep=sweep)
    SweepPoint.objects.create(sweep=sweep, index=0, config={}, experiment_id=lab["a"])
    SweepPoint.objects.create(sweep=sweep, index=1, config={}, experiment_id=lab["b"], reused=True)
    assert listed(client, f"?sweep={sweep.pk}") == [lab["b"], lab["a"]]
    assert listed(client, f"?sweep={sweep.pk + 1}") == []


@pytest.mark.parametrize("key, ascending", [
    ("id", ["a", "b", "c", "d"]),
    ("created", ["a", "b", "c", "d"]),
    ("name", ["a", "b", "c", "d"]),
    ("status", ["b", "a", "c", "d"]),  # failed, finished, queued, running
    ("model", ["a", "c", "b", "d"]),  # conv2, conv4, lenet_300_100, lm_net
    ("dataset", ["a", "c", "b", "d"]),  # cifar10 (ties by id), mnist, python_docs
])
def test_sorting_by_each_column_both_ways(client, lab, key, ascending):
    assert listed(client, f"?sort={key}") == [lab[k] for k in ascending]
    assert listed(client, f"?sort=-{key}") == [lab[k] for k in reversed(ascending)]


def test_sorting_by_owner_and_best_ticket_puts_the_missing_last(client, lab):
    assert listed(client, "?sort=owner")[:3] == [lab["a"], lab["d"], lab["b"]]  # alice (ties by id), bob
    assert listed(client, "?sort=owner")[-1] == lab["c"]  # no owner
    assert listed(client, "?sort=-owner") == [lab["b"], lab["d"], lab["a"], lab["c"]]
    assert listed(client, "?sort=best") == [lab["b"], lab["a"], lab["d"], lab["c"]]
    assert listed(client, "?sort=-best") == [lab["d"], lab["a"], lab["b"], lab["c"]]


def test_column_headers_sort_and_flip_keeping_the_filters(client, lab):
    html = client.get("/?tag=baseline&sort=name").content.decode()
    assert 'data-sort="name" href="?tag=baseline&amp;sort=-name"' in html
    assert 'data-sort="status" href="?tag=baseline&amp;sort=status"' in html
    assert 'data-sort="created" href="?tag=baseline"' in html  # newest first is the default


def test_pages_keep_the_filters_and_the_sort(client, user):
    for index in range(120):
        make(f"run {index:03d}", user, ["many"] if index % 2 else [], status="finished")
    html = client.get("/?tag=many&sort=name").content.decode()
    assert "60 experiments match" in html and "page 1 of 2" in html
    assert 'href="?tag=many&amp;sort=name&amp;page=2" id="page-next"' in html
    second = listed(client, "?tag=many&sort=name&page=2")
    assert len(second) == 10
    names = Experiment.objects.filter(pk__in=second).order_by("name").values_list("name", flat=True)
    assert list(names) == [f"run {index:03d}" for index in range(101, 120, 2)]
    assert listed(client, "?tag=many&sort=name&page=999") == second  # past the end: the last page
    assert len(listed(client)) == 50


def test_the_page_reads_a_few_queries_whatever_the_number_of_rows(client, user, django_assert_max_num_queries):
    for index in range(60):
        make(f"r{index}", user, ["a", "b"], status=["queued", "finished", "running"][index % 3])
    with django_assert_max_num_queries(9):  # session, user, count, rows, tags, queue places, accounts, tags
        html = client.get("/").content.decode()
    assert html.count('class="tag"') == 100 and "in the celery queue" in html


@pytest.mark.parametrize("query, message", [
    ("?sort=colour", "sort must be one of"),
    ("?sort=--name", "sort must be one of"),
    ("?page=abc", "page must be a whole number"),
    ("?page=0", "page must be a whole number"),
    ("?page=-2", "page must be a whole number"),
    ("?status=done", "status must be one of"),
    ("?task=vision", "task must be one of"),
    ("?sweep=abc", "sweep is a sweep"),
    ("?q=" + "x" * 300, "at most 200 characters"),
])
def test_bad_list_parameters_are_a_400_that_says_why(client, lab, query, message):
    response = client.get("/" + query)
    assert response.status_code == 400 and message in response.content.decode()


def test_a_filter_that_matches_nothing_says_so(client, lab):
    html = client.get("/?tag=nothing-has-it").content.decode()
    assert 'id="no-match"' in html and "No experiments yet" not in html


def test_rows_show_name_tags_and_sweep(client, user):
    sweep = Sweep.objects.create(owner=user, name="s", base_spec={})
    experiment = make("", user, ["baseline"], status="finished", sweep=sweep)
    Experiment.objects.bulk_create([Experiment(spec={}, model_name="conv2", dataset_name="cifar10", owner=user)])
    html = client.get("/?sort=id").content.decode()
    assert f'<a href="/e/{experiment.pk}/">{experiment.name}</a>' in html and experiment.name.startswith("lenet")
    assert '<a class="tag" href="?sort=id&amp;tag=baseline">baseline</a>' in html
    assert f'href="?sweep={sweep.pk}">sweep {sweep.pk}</a>' in html
    assert "conv2 · cifar10</a>" in html  # a row stored without a name (bulk) shows its fallback


def test_the_sweep_form_keeps_its_own_labels_and_the_experiment_form_has_them(client):
    experiment_form = client.get("/new/").content.decode()
    assert "Name, notes and tags" in experiment_form and 'name="name"' in experiment_form
    sweep_form = client.get("/sweeps/new/").content.decode()
    assert "Name, notes and tags" not in sweep_form and 'name="name"' not in sweep_form
    assert sweep_form.count('name="tags"') == 1 and sweep_form.count('name="description"') == 1
