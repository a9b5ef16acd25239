"""The new-experiment form: fields generated from the trainer's spec metadata, validation delegated
to the trainer's spec (one place), errors shown next to the field they name."""
from __future__ import annotations

import re
import types
import typing

from django import forms

from frontend import catalog, labels, services
from frontend.models import Experiment
from frontend.presets import PRESETS
from trainer.analyses import ANALYSES, check_runs_with_experiment, make_run_info
from trainer.analyses.params import parse_text
from trainer.events import TICKET
from trainer.spec import ExperimentSpec, SpecError, spec_fields
from trainer.sweeps import SweepDefinition, parse_values

# Display groups; a spec field not listed here lands in "Advanced", so new trainer fields show up by themselves.
# A group named in TASK_GROUPS is shown only while its task is picked (new_experiment.js).
FIELD_GROUPS: list[tuple[str, list[str]]] = [
    ("Model and data", ["model", "dataset"]),
    ("Pruning schedule", ["pruning.rounds", "pruning.fraction", "pruning.scope", "pruning.layer_fractions",
                          "pruning.schedule", "pruning.strategy", "rewind_step"]),
    ("Training", ["training.training_steps", "training.optimizer", "training.lr", "training.momentum",
                  "training.weight_decay", "training.batch_size", "training.eval_interval"]),
    ("Language model", ["training.context_length"]),
    ("Reinforcement learning (A2C)", ["reinforcement.envs", "reinforcement.rollout_steps", "reinforcement.gamma",
                                      "reinforcement.gae_lambda", "reinforcement.value_coef",
                                      "reinforcement.entropy_coef", "reinforcement.eval_episodes"]),
    ("Controls, replicates and seeds", ["controls", "control_rounds", "replicates", "init_seed", "data_seed"]),
]
TASK_GROUPS = {"Language model": "language_modeling", "Reinforcement learning (A2C)": "reinforcement_learning"}
TASK_FIELDS = {name: TASK_GROUPS[title] for title, names in FIELD_GROUPS if title in TASK_GROUPS for name in names}
ADVANCED_GROUP = "Advanced"


def form_name(dotted: str) -> str:
    """'training.lr' -> 'training__lr': a name that is also a valid HTML id and CSS selector."""
    return dotted.replace(".", "__")


def _parse_list(text: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", text.strip()) if item]


class ListField(forms.CharField):
    """Comma- or space-separated values; items are typed by the spec's validation."""

    def __init__(self, item_type=str, **kwargs):
        self.item_type = item_type
        super().__init__(required=False, **kwargs)

    def prepare_value(self, value):
        return ", ".join(str(item) for item in value) if isinstance(value, list) else value

    def to_python(self, value):
        items = _parse_list(super().to_python(value) or "")
        if self.item_type in (int, float):
            try:
                return [self.item_type(item) for item in items]
            except ValueError:
                kind = "whole numbers" if self.item_type is int else "numbers"
                raise forms.ValidationError(f"expected {kind} separated by commas, e.g. '1, 3, 5'") from None
        return items


class LayerFractionsField(forms.CharField):
    """'fc3.weight=0.1, conv1.weight=0.1' <-> {'fc3.weight': 0.1, 'conv1.weight': 0.1}."""

    def __init__(self, **kwargs):
        super().__init__(required=False, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return ", ".join(f"{name}={fraction:g}" for name, fraction in value.items())
        return value

    def to_python(self, value):
        fractions = {}
        for item in _parse_list(super().to_python(value) or ""):
            name, equals, number = item.partition("=")
            if not equals or not name:
                raise forms.ValidationError(f"expected layer=fraction pairs such as 'fc3.weight=0.1', got {item!r}")
            try:
                fractions[name] = float(number)
            except ValueError:
                raise forms.ValidationError(f"{number!r} (for {name}) is not a number") from None
        return fractions


class SelectWithDisabled(forms.Select):
    def __init__(self, disabled_values=(), **kwargs):
        super().__init__(**kwargs)
        self.disabled_values = set(disabled_values)

    def create_option(self, name, value, *args, **kwargs):
        option = super().create_option(name, value, *args, **kwargs)
        if value in self.disabled_values:
            option["attrs"]["disabled"] = True
        return option


def _form_field(dotted: str, dataclass_field, hint) -> forms.Field:
    meta = dataclass_field.metadata
    common = {"help_text": meta.get("help", ""), "label": dotted.rsplit(".", 1)[-1].replace("_", " ")}
    if dotted == "model":
        choices = [(m["name"], m["name"]) for m in catalog.model_choices()]
        return forms.ChoiceField(choices=choices, **common)
    if dotted == "dataset":
        # Datasets that are not installed are listed (so the user learns they exist) but disabled.
        found = catalog.dataset_choices()
        choices = [(d["name"], d["title"] if d["installed"] else f"{d['title']} (not installed)") for d in found]
        widget = SelectWithDisabled(disabled_values={d["name"] for d in found if not d["installed"]})
        return forms.ChoiceField(choices=choices, widget=widget, **common)
    origin = typing.get_origin(hint)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if meta.get("choices"):
            return forms.MultipleChoiceField(choices=[(c, c.replace("_", " ")) for c in meta["choices"]],
                                             required=False, widget=forms.CheckboxSelectMultiple, **common)
        return ListField(item_type=item_type, **common)
    if origin is dict:
        return LayerFractionsField(**common)
    optional = origin in (typing.Union, types.UnionType)
    if optional:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if meta.get("choices"):
        return forms.ChoiceField(choices=[(c, c) for c in meta["choices"]], **common)
    if hint is int:
        return forms.IntegerField(required=not optional, **common)
    if hint is float:
        return forms.FloatField(required=not optional, widget=forms.NumberInput(attrs={"step": "any"}), **common)
    if hint is bool:
        return forms.BooleanField(required=False, **common)
    return forms.CharField(**common)


SPEC_FIELDS = {dotted: (f, hint) for dotted, f, hint in spec_fields()}


def spec_to_initial(spec: ExperimentSpec) -> dict:
    data = spec.to_dict()
    initial = {}
    for dotted in SPEC_FIELDS:
        value = data
        for part in dotted.split("."):
            value = value[part]
        initial[form_name(dotted)] = value
    initial["task"] = catalog.task_of_dataset_name(spec.dataset)
    return initial


def _flatten(nested: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in nested.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in SPEC_FIELDS:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def widget_values(nested: dict) -> dict:
    """A (partial) spec dict -> {form field name: value as its widget shows it}, for the page's script."""
    form = ExperimentForm()
    values = {"task": catalog.task_of_dataset_name(nested["dataset"])} if "dataset" in nested else {}
    for dotted, value in _flatten(nested).items():
        name = form_name(dotted)
        if name in form.fields:
            field = form.fields[name]
            if isinstance(field, forms.MultipleChoiceField):
                values[name] = value
            else:
                values[name] = "" if value is None else field.prepare_value(value)
    return values


def _label_rule(rule, value):
    try:
        return rule(value)
    except ValueError as error:
        raise forms.ValidationError(str(error)) from None


class LabelsForm(forms.Form):
    """A name, a description and tags; the rules are frontend.labels' (the API applies the same)."""

    name = forms.CharField(required=False, strip=False, label="name",
                           widget=forms.TextInput(attrs={"maxlength": labels.MAX_NAME_LENGTH}),
                           help_text="Empty: made from the settings, e.g. 'lenet_300_100 · mnist · 20% × 10 rounds "
                                     "· quiet-heron'.")
    description = forms.CharField(required=False, strip=False, label="notes",
                                  widget=forms.Textarea(attrs={"rows": 4}),
                                  help_text="Markdown (links, lists, code, tables); HTML is shown as text.")
    tags = forms.CharField(required=False, label="tags",
                           help_text="Comma-separated, e.g. 'baseline, paper-fig-3'; letters, digits and - _ . : +.")

    def clean_name(self):
        return _label_rule(labels.clean_name, self.cleaned_data.get("name"))

    def clean_description(self):
        return _label_rule(labels.clean_description, self.cleaned_data.get("description"))

    def clean_tags(self):
        return _label_rule(labels.parse_tags, self.cleaned_data.get("tags"))


def labels_initial(obj, tags=None) -> dict:
    """An experiment's (or sweep's) current labels as LabelsForm's initial values (`tags`: already read)."""
    tags = obj.tags.all() if tags is None else tags
    return {"name": obj.name, "description": obj.description, "tags": ", ".join(tag.name for tag in tags)}


class ExperimentForm(LabelsForm):
    preset = forms.CharField(required=False, widget=forms.HiddenInput)
    labels_group = True  # the experiment's name, notes and tags (a sweep has its own)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What the page shows (a task's models, datasets and settings); the spec's dataset decides the task.
        self.fields["task"] = forms.ChoiceField(
            choices=[(task["name"], f"{task['title']} ({task['metric']}, {task['direction']})")
                     for task in catalog.task_choices()], required=False, initial="classification",
            label="task", help_text="What the network learns; the models and datasets below are the task's.")
        for dotted, (dataclass_field, hint) in SPEC_FIELDS.items():
            self.fields[form_name(dotted)] = _form_field(dotted, dataclass_field, hint)
        self.fields["analyses"] = forms.MultipleChoiceField(
            choices=analysis_choices_with_experiment(), required=False, widget=forms.CheckboxSelectMultiple,
            label="analyses to run when the IMP run finishes",
            help_text="Each runs with its default parameters on the finished run (one the chosen model cannot "
                      "run is refused with the reason); more, with other parameters, from the result page.")
        self.fields["visibility"] = forms.ChoiceField(
            choices=Experiment.Visibility.choices, initial=Experiment.Visibility.PRIVATE, widget=forms.RadioSelect,
            required=False,
            label="who can see it", help_text="Changeable later on the experiment's page.")
        self.spec: ExperimentSpec | None = None

    def groups(self):
        """[(title, [bound fields], task or "")] in display order, for the template; the task picker leads."""
        listed = {name for _, names in FIELD_GROUPS for name in names}
        groups = [(title, [self[form_name(name)] for name in names if name in SPEC_FIELDS], TASK_GROUPS.get(title, ""))
                  for title, names in FIELD_GROUPS]
        groups[0][1].insert(0, self["task"])
        advanced = [self[form_name(name)] for name in SPEC_FIELDS if name not in listed]
        return groups + [("Analyses", [self["analyses"]], ""), ("Sharing", [self["visibility"]], ""),
                         *([("Name, notes and tags", [self["name"], self["description"], self["tags"]], "")]
                           if self.labels_group else []),
                         (ADVANCED_GROUP, advanced, "")]

    def clean_visibility(self):
        return self.cleaned_data.get("visibility") or Experiment.Visibility.PRIVATE  # omitted: private

    def clean_preset(self):
        key = self.cleaned_data.get("preset", "")
        return key if key in PRESETS else ""

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned  # spec validation needs every value; fix the typed errors first
        nested: dict = {}
        task = catalog.task_of_dataset_name(cleaned.get("dataset") or "")
        for dotted in SPEC_FIELDS:
            if TASK_FIELDS.get(dotted, task) != task:
                continue  # another task's settings, hidden on the page: the spec's defaults, which it requires
            parts = dotted.split(".")
            target = nested
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = cleaned.get(form_name(dotted))
        try:
            spec = ExperimentSpec.from_dict(nested)
            catalog.check_runnable_here(spec)
            check_runs_with_experiment(cleaned.get("analyses", []), spec)
        except SpecError as error:
            self._add_spec_error(error)
            return cleaned
        self.spec = spec
        return cleaned

    def _add_spec_error(self, error: SpecError) -> None:
        """SpecError.field is a dotted path, maybe with an index or a dict key: find the form field it is in."""
        if error.field == "analyses":
            self.add_error("analyses", error.message)
            return
        path = error.field.split("[", 1)[0]
        while path and path not in SPEC_FIELDS:
            path = path.rpartition(".")[0]
        if path:
            detail = error.field[len(path):].lstrip(".")
            message = f"{detail}: {error.message}" if detail else error.message
            self.add_error(form_name(path), message)
        else:
            self.add_error(None, str(error))



# ---- analyses of a finished experiment ---------------------------------------------------------

def _param_text(value) -> str:
    """A parameter's value as its text box shows it: lists comma-separated, None empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


def finished_experiment_runs() -> list[tuple[str, str]]:
    """(run_dir, label) of finished experiments: what a 'path' parameter (another run) may name."""
    rows = Experiment.objects.filter(status=Experiment.Status.FINISHED).exclude(run_dir="")
    return [(row.run_dir, f"experiment {row.pk}: {row.model_name} on {row.dataset_name}") for row in rows]


class AnalysisForm(forms.Form):
    """One analysis's parameters, fields generated from its schema; validation is the analysis's own.

    Free-text values are read with the trainer's own parser (`parse_text`), then the whole dict goes
    through `Analysis.validate`, whose SpecError names the parameter the message is shown beside.
    """

    def __init__(self, analysis, experiment=None, *args, **kwargs):
        kwargs.setdefault("prefix", analysis.name)
        super().__init__(*args, **kwargs)
        self.analysis = analysis
        self.experiment = experiment
        self.params: dict | None = None  # validated, once is_valid()
        for param in analysis.params:
            self.fields[param.name] = self._field(param)

    def _field(self, param) -> forms.Field:
        common = {"label": param.name.replace("_", " "), "help_text": param.help}
        default = list(param.default) if isinstance(param.default, tuple) else param.default
        if param.kind == "bool":
            return forms.BooleanField(required=False, initial=default, **common)
        if param.kind == "str_list" and param.choices:
            return forms.MultipleChoiceField(choices=param.choice_labels(), required=False,
                                             initial=default, widget=forms.CheckboxSelectMultiple, **common)
        if param.kind == "str" and param.choices:
            return forms.ChoiceField(choices=param.choice_labels(), initial=default, **common)
        if param.name == "target_dataset":
            choices = [("", "—")] + [(d["name"], d["title"]) for d in catalog.dataset_choices() if d["installed"]]
            return forms.ChoiceField(choices=choices, required=False, initial=default or "", **common)
        if param.kind == "path":
            return forms.ChoiceField(choices=[("", "—")] + finished_experiment_runs(), required=False,
                                     initial="", **common)
        return forms.CharField(required=False, initial=_param_text(default), **common)

    def _value(self, param, raw):
        """A cleaned field value -> the JSON value the schema expects (validation comes after)."""
        if param.kind == "bool" or (param.choices and param.kind in ("str", "str_list")):
            return raw
        text = (raw or "").strip()
        if not text:
            if param.kind.endswith("_list"):
                return []
            if param.optional or param.default is None:
                return None
            raise SpecError(param.name, f"a value is required (default {_param_text(param.default)})")
        return parse_text(param, text)

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        values = {}
        try:
            for param in self.analysis.params:
                values[param.name] = self._value(param, cleaned.get(param.name))
            params = self.analysis.validate(values)
            if self.experiment is not None:
                self.analysis.preflight(params, experiment_run_info(self.experiment))
        except SpecError as error:
            name = error.field.split("[", 1)[0]
            if name in self.fields:
                detail = error.field[len(name):]
                self.add_error(name, f"{detail}: {error.message}" if detail else error.message)
            else:
                self.add_error(None, str(error))
            return cleaned
        self.params = params
        return cleaned


def experiment_run_info(experiment: Experiment) -> dict:
    """The run_info an analysis's check looks at (trainer.analyses.common), from the experiment's rows:
    what the engine would only find out in the worker is refused here, beside the parameter it names."""
    finished = experiment.round_results.filter(network=TICKET, replicate=0, status="finished")
    return make_run_info(experiment.model_name, experiment.dataset_name,
                         finished.values_list("round_index", flat=True),
                         (experiment.spec or {}).get("rewind_step", "0it"))


def analysis_choices_with_experiment() -> list[tuple[str, str]]:
    """The analyses that can run with their default parameters when an IMP run finishes."""
    return [(name, analysis.title) for name, analysis in ANALYSES.items() if analysis.runs_with_experiment]


# ---- a sweep: the experiment form's spec as its base, plus swept fields and seeds ---------------------

class SweepForm(ExperimentForm):
    """The new-experiment form's fields give the base spec; rows of (field, values) posted as the lists
    grid_field / grid_values give the grid; seeds, name, description and tags describe the sweep. Every
    point is checked here (services.sweep_points), so a refusal is shown beside the form, nothing created."""

    labels_group = False  # the sweep's own name, notes and tags below; its points are named after it

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.fields["name"]
        self.fields["sweep_name"] = forms.CharField(max_length=150, label="sweep name",
                                                    help_text="Each point's experiment is named after it.")
        self.fields["description"] = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                                     help_text="Markdown.")
        # cleaned by LabelsForm.clean_tags: frontend.labels' rule, as for an experiment
        self.fields["tags"] = forms.CharField(required=False, help_text="Comma-separated, e.g. baseline, fig-3.")
        self.fields["seeds"] = forms.IntegerField(min_value=1, max_value=1000, initial=1,
                                                  help_text="Each configuration runs with this many seeds "
                                                            "(seed 0 = the init and data seeds below).")
        self.fields["grid"] = forms.CharField(required=False, widget=forms.HiddenInput)  # carries grid errors
        self.grid_rows: list[tuple[str, str]] = []
        if self.is_bound:
            self.grid_rows = list(zip(self.data.getlist("grid_field"), self.data.getlist("grid_values")))
        self.definition: SweepDefinition | None = None
        self.points: list = []

    def sweep_fields(self):
        return [self[name] for name in ("sweep_name", "seeds", "description", "tags")]

    def clean(self):
        cleaned = super().clean()
        grid: dict[str, list] = {}
        for dotted, text in self.grid_rows:
            if not dotted and not text.strip():
                continue  # an empty row
            try:
                if dotted in grid:
                    raise SpecError(f"grid.{dotted}", "is swept twice; give all its values in one row")
                grid[dotted] = parse_values(dotted, text)
            except SpecError as error:
                self.add_error("grid", f"{error.field}: {error.message}")
        if self.errors or self.spec is None:
            return cleaned
        try:
            self.definition = SweepDefinition.from_dict({"base_spec": self.spec.to_dict(), "grid": grid,
                                                         "seeds": cleaned["seeds"]})
            self.points = services.sweep_points(self.definition, cleaned.get("analyses", []))
        except SpecError as error:
            if error.field.startswith("base_spec."):
                self._add_spec_error(SpecError(error.field[len("base_spec."):], error.message))
            else:
                self.add_error("seeds" if error.field == "seeds" else "grid", error.message)
        return cleaned
