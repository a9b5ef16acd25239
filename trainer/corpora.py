"""Text corpora for language modelling, as word-level token-id tensors.

The language-modelling task follows Yu et al. (ICLR 2020), "Playing the lottery with rewards and multiple
languages: lottery tickets in RL and NLP", whose LSTM language models train on WikiText-2 (Merity et al. 2017,
"Pointer Sentinel Mixture Models"). Each corpus is a `CorpusEntry` in `CORPORA`:

- `python_docs` is embedded: the English reference text that every CPython ships in `pydoc_data.topics`
  (the text `help('topic')` prints), so it needs no download. Its text is that of the running Python version.
- `wikitext2` and `wikitext103` are read from the Salesforce release (word level, already tokenized) in the
  data directory (`LOTTERYWEB_DATA_DIR`, default `<repo>/data`, the directory of the image datasets):
  `<data_dir>/wikitext-2/wiki.train.tokens`, `wiki.valid.tokens`, `wiki.test.tokens`, and likewise
  `<data_dir>/wikitext-103/...`. Nothing is downloaded.

Tokens follow the convention of PyTorch's word_language_model example and AWD-LSTM: each non-empty line is
split on whitespace and ends with one `<eos>`. Vocabulary ids are fixed: 0 is `<unk>`, 1 is `<eos>`, then the
training tokens by descending count, ties alphabetically. Valid and test tokens outside the vocabulary map
to `<unk>`.
"""
from __future__ import annotations

import re
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.datadir import DATA_DIR_ENV, DatasetError, resolve_data_dir as _resolve_data_dir

UNK = "<unk>"
EOS = "<eos>"
SPECIAL_TOKENS = (UNK, EOS)  # ids 0 and 1 in every corpus
SPLITS = ("train", "valid", "test")

# python_docs: topics sorted by name; topic i goes to valid when i % 10 == 0, to test when i % 10 == 1, else
# to train. One in ten rather than one in twenty: the topics differ a lot in length, and the ~80 topics of a
# CPython would leave only four for validation.
PYTHON_DOCS_SPLIT_PERIOD = 10
PYTHON_DOCS_MIN_COUNT = 3  # rarer training tokens become <unk>, as WikiText does for its rare words
# A word, or any other single non-space character: punctuation becomes a token of its own.
_WORD_OR_PUNCTUATION = re.compile(r"\w+|[^\w\s]")
# The characters of reStructuredText heading underlines ("*****") and table borders ("+-----+----+"):
# such lines carry no text, only dozens of trivially predictable tokens (over 10% of all tokens).
_LAYOUT_CHARACTERS = "-=+*~^# "


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus; the tensors are shared when cached, so never modify them in place."""
    name: str
    vocabulary: tuple[str, ...]  # id -> token; ids 0 and 1 are <unk> and <eos>
    train: torch.Tensor  # 1-D int64 token ids
    valid: torch.Tensor
    test: torch.Tensor


@dataclass(frozen=True)
class CorpusEntry:
    name: str
    title: str
    source: str
    licence: str
    embedded: bool  # shipped with Python: always installed, no files
    files: tuple[str, ...]  # train, valid and test files, relative to the data directory (empty when embedded)


# The archive of each file corpus, named in the message of a missing file.
_ARCHIVES = {"wikitext2": "wikitext-2-v1.zip", "wikitext103": "wikitext-103-v1.zip"}


def _wikitext_entry(name: str, title: str, directory: str) -> CorpusEntry:
    return CorpusEntry(
        name, title,
        source=f"Merity et al. 2017, 'Pointer Sentinel Mixture Models' (Salesforce Research); the word-level "
               f"release {_ARCHIVES[name]}, extracted",
        licence="Creative Commons Attribution-ShareAlike 3.0 (text from Wikipedia)",
        embedded=False, files=tuple(f"{directory}/wiki.{split}.tokens" for split in SPLITS))


CORPORA: dict[str, CorpusEntry] = {
    "python_docs": CorpusEntry(
        "python_docs", "Python documentation topics",
        source="pydoc_data.topics of the running CPython (the reference text that help('topic') prints)",
        licence="Python Software Foundation License Version 2 (part of the CPython distribution)",
        embedded=True, files=()),
    "wikitext2": _wikitext_entry("wikitext2", "WikiText-2", "wikitext-2"),
    "wikitext103": _wikitext_entry("wikitext103", "WikiText-103", "wikitext-103"),
}


def _entry(name: str) -> CorpusEntry:
    try:
        return CORPORA[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}") from None


def is_installed(name: str, data_dir: Path | str | None = None) -> bool:
    entry = _entry(name)
    root = _resolve_data_dir(data_dir)
    return all((root / file).is_file() for file in entry.files)


# ---- tokens -> ids ---------------------------------------------------------------------------

def _encode_training(lines: Iterable[list[str]], min_count: int) -> tuple[tuple[str, ...], torch.Tensor]:
    """(vocabulary, ids) of the training lines, each a token list ending in <eos>: one pass over the text
    with provisional ids in order of first appearance, then one renumbering to the final vocabulary order."""
    provisional: dict[str, int] = {}
    ids = array("q")
    for tokens in lines:
        ids.extend(provisional.setdefault(token, len(provisional)) for token in tokens)
    token_of = list(provisional)
    counts = np.bincount(np.frombuffer(ids, dtype=np.int64), minlength=len(token_of))
    kept = sorted((index for index, token in enumerate(token_of)
                   if counts[index] >= min_count and token not in SPECIAL_TOKENS),
                  key=lambda index: (-counts[index], token_of[index]))
    vocabulary = SPECIAL_TOKENS + tuple(token_of[index] for index in kept)
    renumber = np.zeros(len(token_of), dtype=np.int64)  # everything not kept -> <unk> (0)
    renumber[kept] = np.arange(len(SPECIAL_TOKENS), len(vocabulary))
    if EOS in provisional:
        renumber[provisional[EOS]] = SPECIAL_TOKENS.index(EOS)
    return vocabulary, torch.from_numpy(renumber[np.frombuffer(ids, dtype=np.int64)])


def _encode(lines: Iterable[list[str]], vocabulary: tuple[str, ...]) -> torch.Tensor:
    index = {token: position for position, token in enumerate(vocabulary)}
    unknown = index[UNK]
    ids = array("q")
    for tokens in lines:
        ids.extend(index.get(token, unknown) for token in tokens)
    return torch.from_numpy(np.frombuffer(ids, dtype=np.int64).copy())


def _with_eos(lines: Iterable[str], tokenize: Callable[[str], list[str]]) -> Iterator[list[str]]:
    for line in lines:
        tokens = tokenize(line)
        if tokens:  # blank lines carry no <eos>
            tokens.append(EOS)
            yield tokens


def _check_not_empty(ids: torch.Tensor, what: str) -> torch.Tensor:
    if len(ids) == 0:
        raise DatasetError(f"{what} holds no tokens (only blank lines); it is not a complete copy.")
    return ids


def _build(name: str, split_lines: dict[str, Iterable[str]], split_names: dict[str, str],
           tokenize: Callable[[str], list[str]], min_count: int) -> Corpus:
    vocabulary, train = _encode_training(_with_eos(split_lines["train"], tokenize), min_count)
    _check_not_empty(train, split_names["train"])
    evaluation = {split: _check_not_empty(_encode(_with_eos(split_lines[split], tokenize), vocabulary),
                                          split_names[split])
                  for split in ("valid", "test")}
    return Corpus(name, vocabulary, train, evaluation["valid"], evaluation["test"])


# ---- python_docs (embedded) -------------------------------------------------------------------

def _python_docs_tokens(line: str) -> list[str]:
    stripped = line.strip()
    if len(stripped) >= 3 and not stripped.strip(_LAYOUT_CHARACTERS):
        return []
    return _WORD_OR_PUNCTUATION.findall(line)


def _python_docs_split(index: int) -> str:
    position = index % PYTHON_DOCS_SPLIT_PERIOD
    return "valid" if position == 0 else "test" if position == 1 else "train"


def _load_python_docs() -> Corpus:
    """The topics of pydoc_data, split by topic so that no text is in two splits.

    Topics are sorted by name; topic i (from 0) is validation when i % 10 == 0, test when i % 10 == 1,
    training otherwise; each split is its topics' text in that order. Words and single punctuation
    characters are the tokens (case kept, as in WikiText); heading underlines and table borders
    are dropped. The vocabulary
    is <unk>, <eos> and the training tokens seen at least 3 times.
    """
    from pydoc_data.topics import topics  # imported here: a large module, needed by this corpus only

    split_lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    for index, topic in enumerate(sorted(topics)):
        split_lines[_python_docs_split(index)].extend(topics[topic].splitlines())
    split_names = {split: f"The {split} split of python_docs (pydoc_data.topics)" for split in SPLITS}
    return _build("python_docs", split_lines, split_names, _python_docs_tokens, PYTHON_DOCS_MIN_COUNT)


# ---- WikiText (files) -------------------------------------------------------------------------

def _text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, read as a stream (WikiText-103's training file is 0.5 GB)."""
    try:
        with open(path, encoding="utf-8") as handle:
            empty = True
            for line in handle:
                empty = False
                yield line
    except OSError as error:
        raise DatasetError(f"Cannot read the file {path}: {error.strerror or error}.") from error
    except UnicodeDecodeError as error:
        raise DatasetError(f"The file {path} is not UTF-8 text ({error.reason}); it is not a WikiText "
                           "token file. Replace it with a complete copy.") from error
    if empty:
        raise DatasetError(f"The file {path} is empty. Replace it with a complete copy.")


def _missing_error(entry: CorpusEntry, root: Path, missing: list[Path]) -> DatasetError:
    directory = (root / entry.files[0]).parent
    names = ", ".join(Path(file).name for file in entry.files)
    verb = "is" if len(missing) == 1 else "are"
    return DatasetError(
        f"The corpus '{entry.name}' ({entry.title}) is not installed: put the files {names} in {directory} "
        f"({', '.join(str(path) for path in missing)} {verb} missing). They are the contents of "
        f"{_ARCHIVES[entry.name]} (the word-level release, not the raw one), extracted. To use another data "
        f"directory, set the environment variable {DATA_DIR_ENV}.")


def _load_wikitext(entry: CorpusEntry, root: Path) -> Corpus:
    paths = {split: root / file for split, file in zip(SPLITS, entry.files)}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:
        raise _missing_error(entry, root, missing)
    return _build(entry.name, {split: _text_lines(path) for split, path in paths.items()},
                  {split: f"The file {path}" for split, path in paths.items()}, str.split, min_count=1)


# ---- loading and cache ------------------------------------------------------------------------

_cache: dict[tuple[str, str | None], Corpus] = {}
_cache_lock = threading.Lock()


def load_corpus(name: str, data_dir: Path | str | None = None) -> Corpus:
    """The corpus, tokenized once per process for each (name, resolved data directory).

    Unknown names raise ValueError; missing, unreadable or empty files raise DatasetError naming the file.
    """
    entry = _entry(name)
    root = _resolve_data_dir(data_dir)
    with _cache_lock:  # one lock: concurrent requests for one corpus tokenize it once
        key = (name, None if entry.embedded else str(root.resolve()))
        if key not in _cache:
            _cache[key] = _load_python_docs() if entry.embedded else _load_wikitext(entry, root)
        return _cache[key]


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def token_windows(tokens: torch.Tensor, context_length: int) -> torch.Tensor:
    """(N, context_length + 1) int64 training windows: window i is tokens[i*L : i*L + L + 1] for L =
    context_length, so the inputs (the first L) of consecutive windows tile the text without overlap and each
    window's last token is the target of its last input. The incomplete window at the end is dropped."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be a 1-D tensor, got shape {tuple(tokens.shape)}")
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length must be a positive integer, got {context_length!r}")
    if len(tokens) < context_length + 1:
        raise ValueError(f"{len(tokens)} tokens do not fill one window of {context_length} + 1 tokens")
    return tokens.to(torch.int64).unfold(0, context_length + 1, context_length).contiguous()
