"""Names, descriptions and tags of experiments and sweeps.

A description is Markdown written by any user and shown to everyone who may see the experiment (a
public link too), so its HTML is sanitised after rendering: an allow-list of tags and attributes
(nh3, the Ammonia sanitiser), links limited to http(s)/mailto and marked rel="noopener noreferrer nofollow".
Raw HTML in the Markdown is escaped, not passed through.
"""
from __future__ import annotations

import re
import secrets

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

MAX_NAME_LENGTH = 200  # Experiment.name's and Sweep.name's column
MAX_DESCRIPTION_LENGTH = 20_000
MAX_TAGS = 20
MAX_TAG_LENGTH = 50
TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:+-]*$")
ALLOWED_TAGS = {"p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a",
                "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "del"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}


class _NoRawHtml(markdown.Extension):
    """Raw HTML blocks and inline HTML are dropped by the parser; what is left is escaped text."""

    def extendMarkdown(self, md):  # noqa: N802 (markdown's API)
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")


def render_markdown(text: str) -> SafeString:
    """Markdown → sanitised HTML, safe to put into a page as is."""
    html = markdown.markdown(text or "", extensions=["tables", "fenced_code", "sane_lists", _NoRawHtml()],
                             output_format="html")
    clean = nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes=URL_SCHEMES,
                      link_rel="noopener noreferrer nofollow")
    return mark_safe(clean)  # noqa: S308 (sanitised above)


def parse_tags(text: str | list | None) -> list[str]:
    """'baseline, Paper fig3' or ['baseline', 'paper-fig3'] → ['baseline', 'paper-fig3'] (lower case, sorted,
    unique; spaces inside a tag become '-'). Raises ValueError with a message for a bad tag."""
    if text is None:
        return []
    items = text if isinstance(text, list) else re.split(r"[,\n]", str(text))
    tags = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"a tag is a string, not {item!r}")
        tag = re.sub(r"\s+", "-", item.strip().lower())
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"tag {tag[:20]!r}… is longer than {MAX_TAG_LENGTH} characters")
        if not TAG_PATTERN.match(tag):
            raise ValueError(f"tag {tag!r}: use letters, digits and - _ . : + (starting with a letter or digit)")
        tags.add(tag)
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    return sorted(tags)


def set_tags(obj, names: list[str]) -> None:
    """Give `obj` (an Experiment or a Sweep, saved) exactly these tags, creating the Tag rows that are new."""
    tag_model = obj.tags.model  # Tag: frontend.models imports this module, so it is reached through the relation
    tags = [tag_model.objects.get_or_create(name=name)[0] for name in names]
    obj.tags.set(tags)


# Two short words tell apart experiments whose settings read the same (a sweep's seeds, a re-run).
NAME_ADJECTIVES = ("amber", "brisk", "calm", "clever", "dusty", "eager", "fancy", "gentle", "hazy", "icy", "jolly",
                   "keen", "lively", "mellow", "nimble", "odd", "proud", "quiet", "rapid", "rusty", "shy", "sunny",
                   "tidy", "vivid", "witty", "young", "zesty", "bold", "crisp", "plain", "silver", "wild")
NAME_NOUNS = ("otter", "heron", "maple", "comet", "falcon", "pebble", "lynx", "cedar", "badger", "walrus", "tulip",
              "quartz", "raven", "meadow", "beetle", "harbor", "ember", "fjord", "gecko", "iris", "koala", "lotus",
              "marten", "nectar", "orchid", "puffin", "reef", "sparrow", "thistle", "willow", "yak", "zebra")


def default_name(spec: dict) -> str:
    """A readable name from the spec's settings plus a word pair:
    'lenet_300_100 · fashion_mnist · 20% × 10 rounds · quiet-heron'. Tolerates partial specs."""
    spec = spec if isinstance(spec, dict) else {}
    pruning = spec.get("pruning") if isinstance(spec.get("pruning"), dict) else {}
    parts = [str(spec.get("model") or "experiment")]
    if spec.get("dataset"):
        parts.append(str(spec["dataset"]))
    fraction, rounds = pruning.get("fraction"), pruning.get("rounds")
    if isinstance(fraction, (int, float)) and isinstance(rounds, int):
        percent = f"{100 * fraction:.3g}%"
        parts.append(f"one-shot {percent} × {rounds}" if pruning.get("schedule") == "one_shot"
                     else f"{percent} × {rounds} rounds")
    parts.append(f"{secrets.choice(NAME_ADJECTIVES)}-{secrets.choice(NAME_NOUNS)}")
    return " · ".join(parts)[:MAX_NAME_LENGTH]


def clean_name(value) -> str:
    """A name as typed: one line, spaces collapsed; "" means "generate one". ValueError if too long."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"a name is text, not {type(value).__name__}")
    name = " ".join(value.split())
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"a name is at most {MAX_NAME_LENGTH} characters (this one has {len(name)})")
    return name


def clean_description(value) -> str:
    """Markdown as typed (rendered and sanitised when shown). ValueError if not text or too long."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"a description is Markdown text, not {type(value).__name__}")
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise ValueError(f"a description is at most {MAX_DESCRIPTION_LENGTH} characters (this one has {len(value)})")
    return value.replace("\r\n", "\n").strip()
