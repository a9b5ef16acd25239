"""Text corpora: the embedded python_docs corpus, WikiText files written here in the release's format,
the vocabulary rules, the errors of missing or damaged files, the cache and the training windows."""
from __future__ import annotations

import pydoc_data.topics

import pytest
import torch

from trainer import corpora
from trainer.corpora import CORPORA, load_corpus, token_windows
from trainer.datasets import DatasetError

# WikiText's format: a space before and after each line's tokens, " = Title = " headings, " = = Section = = "
# subheadings, lines of a single space between paragraphs, rare words already replaced by <unk>.
WIKI_TRAIN = (" \n = Northern Harbour = \n \n"
              " The harbour was built in 1862 by the <unk> company . \n \n"
              " = = History = = \n \n"
              " The harbour grew , and the town grew with the harbour . \n")
WIKI_VALID = " \n = Old Lighthouse = \n \n The lighthouse stood near the harbour . \n"
WIKI_TEST = " \n The town was quiet . \n \n"
WIKI_DIRECTORIES = {"wikitext2": "wikitext-2", "wikitext103": "wikitext-103"}


@pytest.fixture(autouse=True)
def empty_cache():
    corpora.clear_cache()
    yield
    corpora.clear_cache()


def write_wikitext(root, name="wikitext2", train=WIKI_TRAIN, valid=WIKI_VALID, test=WIKI_TEST):
    directory = root / WIKI_DIRECTORIES[name]
    directory.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (directory / f"wiki.{split}.tokens").write_text(text, encoding="utf-8")
    return directory


def decode(corpus, ids: torch.Tensor) -> list[str]:
    return [corpus.vocabulary[index] for index in ids.tolist()]


def expected_tokens(text: str, vocabulary=None) -> list[str]:
    """Whitespace tokens plus <eos> for each non-blank line; out-of-vocabulary ones as <unk>."""
    tokens = []
    for line in text.splitlines():
        if line.split():
            tokens += line.split() + ["<eos>"]
    return tokens if vocabulary is None else [token if token in vocabulary else "<unk>" for token in tokens]


# ---- python_docs --------------------------------------------------------------------------------

def test_python_docs_loads_disjoint_nonempty_splits_over_one_vocabulary():
    corpus = load_corpus("python_docs")

    assert corpus.name == "python_docs" and corpora.is_installed("python_docs")
    assert corpus.vocabulary[:2] == ("<unk>", "<eos>")
    assert len(set(corpus.vocabulary)) == len(corpus.vocabulary) > 1000
    for split in (corpus.train, corpus.valid, corpus.test):
        assert split.dtype == torch.int64 and split.dim() == 1 and len(split) > 1000
        assert 0 <= int(split.min()) and int(split.max()) < len(corpus.vocabulary)
    # rare training words are <unk>, but most of the text is in the vocabulary, in every split
    assert 0 < float((corpus.train == 0).float().mean()) < 0.1
    assert float((corpus.valid == 0).float().mean()) < 0.2 and float((corpus.test == 0).float().mean()) < 0.2
    counts = torch.bincount(corpus.train, minlength=len(corpus.vocabulary))
    assert int(counts[2:].min()) >= corpora.PYTHON_DOCS_MIN_COUNT
    assert counts[2:].tolist() == sorted(counts[2:].tolist(), reverse=True)  # ids by descending count


def test_python_docs_is_deterministic_and_cached():
    first = load_corpus("python_docs")
    assert load_corpus("python_docs") is first
    assert load_corpus("python_docs", "/some/other/data/dir") is first  # embedded: no data directory
    corpora.clear_cache()
    second = load_corpus("python_docs")
    assert second is not first
    assert second.vocabulary == first.vocabulary
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(second, split), getattr(first, split))


def fake_topics() -> dict[str, str]:
    """25 topics whose words say where they are: topic k holds 'wordK' three times and 'onceK' once."""
    return {f"topic{k:02d}": f"Heading {k}\n**********\n\nword{k} word{k}, word{k}.\n\nonce{k} (Mixed Case)\n"
            for k in range(25)}


def test_python_docs_splits_topics_by_the_documented_rule(monkeypatch):
    monkeypatch.setattr(pydoc_data.topics, "topics", fake_topics())
    corpus = load_corpus("python_docs")

    splits = {name: set(decode(corpus, getattr(corpus, name))) for name in ("train", "valid", "test")}
    for k in range(25):  # sorted names: topic k has index k
        expected = "valid" if k % 10 == 0 else "test" if k % 10 == 1 else "train"
        holding = [name for name, words in splits.items() if f"word{k}" in words]
        # the vocabulary comes from train only: valid and test words are <unk>
        if expected == "train":
            assert holding == ["train"]
        else:
            assert holding == [] and f"word{k}" not in corpus.vocabulary
    assert splits["valid"] == splits["test"] == {"<unk>", "<eos>", ",", ".", "(", ")", "Heading", "Mixed", "Case"}


def test_python_docs_tokens_vocabulary_order_and_unknown_words(monkeypatch):
    monkeypatch.setattr(pydoc_data.topics, "topics", fake_topics())
    corpus = load_corpus("python_docs")

    # topic 2 is the first training topic: punctuation split off, case kept, heading underline and blank
    # lines dropped, <eos> per line; '2' and 'once2' occur once in train, so they are <unk>
    assert decode(corpus, corpus.train[:16]) == [
        "Heading", "<unk>", "<eos>", "word2", "word2", ",", "word2", ".", "<eos>",
        "<unk>", "(", "Mixed", "Case", ")", "<eos>", "Heading"]
    assert "*" not in corpus.vocabulary and "2" not in corpus.vocabulary
    # 19 training topics: the shared words 19 times each, each wordK 3 times; ties in alphabetical order
    words = [f"word{k}" for k in range(25) if k % 10 > 1]
    shared = ("(", ")", ",", ".", "Case", "Heading", "Mixed")
    assert corpus.vocabulary == ("<unk>", "<eos>") + shared + tuple(sorted(words))
    assert decode(corpus, corpus.valid[:3]) == ["Heading", "<unk>", "<eos>"]  # '0' of topic00 is not a train token


# ---- WikiText -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["wikitext2", "wikitext103"])
def test_wikitext_reads_the_release_layout(tmp_path, name):
    assert not corpora.is_installed(name, tmp_path)
    write_wikitext(tmp_path, name)
    assert corpora.is_installed(name, tmp_path)
    assert CORPORA[name].files == tuple(f"{WIKI_DIRECTORIES[name]}/wiki.{split}.tokens"
                                        for split in ("train", "valid", "test"))

    corpus = load_corpus(name, tmp_path)

    train_tokens = expected_tokens(WIKI_TRAIN)
    assert decode(corpus, corpus.train) == train_tokens
    assert set(corpus.vocabulary) == set(train_tokens)  # every train token, <unk> included
    counts = {token: train_tokens.count(token) for token in set(train_tokens) - {"<unk>", "<eos>"}}
    assert corpus.vocabulary == ("<unk>", "<eos>") + tuple(sorted(counts, key=lambda token: (-counts[token], token)))
    assert corpus.vocabulary[:4] == ("<unk>", "<eos>", "=", "harbour")  # '=' 6 times, 'harbour' 4 times
    assert decode(corpus, corpus.valid) == expected_tokens(WIKI_VALID, corpus.vocabulary)
    assert decode(corpus, corpus.test) == expected_tokens(WIKI_TEST, corpus.vocabulary)
    assert "Lighthouse" in WIKI_VALID and "lighthouse" not in corpus.vocabulary
    assert "<unk>" in decode(corpus, corpus.valid)


def test_wikitext_in_the_default_data_dir(tmp_path, monkeypatch):
    write_wikitext(tmp_path)
    monkeypatch.setenv("LOTTERYWEB_DATA_DIR", str(tmp_path))
    assert corpora.is_installed("wikitext2")
    corpus = load_corpus("wikitext2")
    assert load_corpus("wikitext2", tmp_path) is corpus  # the same resolved directory shares the cache entry
    assert decode(corpus, corpus.test) == expected_tokens(WIKI_TEST, corpus.vocabulary)


def test_cache_is_per_data_dir(tmp_path):
    write_wikitext(tmp_path / "a")
    write_wikitext(tmp_path / "b", test=" The harbour . \n")
    first = load_corpus("wikitext2", tmp_path / "a")
    second = load_corpus("wikitext2", tmp_path / "b")
    assert len(first.test) == 6 and len(second.test) == 4  # tokens and <eos>
    assert load_corpus("wikitext2", tmp_path / "a") is first
    corpora.clear_cache()
    assert load_corpus("wikitext2", tmp_path / "a") is not first


def test_missing_file_names_the_path_and_the_layout(tmp_path):
    directory = write_wikitext(tmp_path)
    (directory / "wiki.valid.tokens").unlink()
    assert not corpora.is_installed("wikitext2", tmp_path)

    with pytest.raises(DatasetError) as caught:
        load_corpus("wikitext2", tmp_path)

    message = str(caught.value)
    assert f"{directory / 'wiki.valid.tokens'} is missing" in message
    assert str(directory / "wiki.train.tokens") not in message  # present, so not named as missing
    for name in ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens", "wikitext-2-v1.zip",
                 "LOTTERYWEB_DATA_DIR"):
        assert name in message


def test_nothing_installed_names_every_file(tmp_path):
    with pytest.raises(DatasetError, match="are missing") as caught:
        load_corpus("wikitext103", tmp_path)
    for split in ("train", "valid", "test"):
        assert str(tmp_path / "wikitext-103" / f"wiki.{split}.tokens") in str(caught.value)


def test_file_that_is_not_utf8_is_named(tmp_path):
    directory = write_wikitext(tmp_path)
    (directory / "wiki.test.tokens").write_bytes(b" The town \xff\xfe was quiet . \n")
    with pytest.raises(DatasetError, match="not UTF-8") as caught:
        load_corpus("wikitext2", tmp_path)
    assert str(directory / "wiki.test.tokens") in str(caught.value)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize(("content", "problem"), [("", "is empty"), (" \n \n\n", "holds no tokens")],
                         ids=["empty", "blank-lines"])
def test_split_without_tokens_is_named(tmp_path, split, content, problem):
    directory = write_wikitext(tmp_path, **{split: content})
    with pytest.raises(DatasetError, match=problem) as caught:
        load_corpus("wikitext2", tmp_path)
    assert str(directory / f"wiki.{split}.tokens") in str(caught.value)


def test_unknown_corpus_lists_the_known_ones():
    for call in (lambda: load_corpus("penn_treebank"), lambda: corpora.is_installed("penn_treebank")):
        with pytest.raises(ValueError) as caught:
            call()
        for name in ("python_docs", "wikitext2", "wikitext103"):
            assert name in str(caught.value)


def test_registry_entries_describe_their_sources():
    assert CORPORA["python_docs"].embedded and CORPORA["python_docs"].files == ()
    assert "Python Software Foundation" in CORPORA["python_docs"].licence
    for name in ("wikitext2", "wikitext103"):
        assert not CORPORA[name].embedded and "Merity" in CORPORA[name].source


# ---- training windows ---------------------------------------------------------------------------

def test_token_windows_tile_the_text_with_one_token_of_overlap():
    tokens = torch.arange(10, dtype=torch.int32) * 7
    windows = token_windows(tokens, 3)
    assert windows.dtype == torch.int64 and windows.shape == (3, 4)
    assert windows.tolist() == [[0, 7, 14, 21], [21, 28, 35, 42], [42, 49, 56, 63]]
    # one token short of a fourth window's target: the incomplete window is dropped
    assert token_windows(torch.arange(9), 3).tolist() == [[0, 1, 2, 3], [3, 4, 5, 6]]
    for length in (1, 2, 5, 9):
        windows = token_windows(torch.arange(10), length)
        assert windows.shape == ((10 - 1) // length, length + 1)
        assert torch.equal(windows[:, :-1].flatten(), torch.arange(len(windows) * length))  # inputs, no overlap
        assert torch.equal(windows[:, -1], torch.arange(1, len(windows) + 1) * length)  # next window's first input


def test_token_windows_are_a_copy():
    tokens = torch.arange(10)
    windows = token_windows(tokens, 3)
    windows[0, 3] = -1
    assert tokens[3] == 3 and windows[1, 0] == 3


def test_token_windows_refuse_too_few_tokens_and_bad_lengths():
    with pytest.raises(ValueError, match="do not fill one window"):
        token_windows(torch.arange(4), 4)
    assert token_windows(torch.arange(5), 4).shape == (1, 5)
    for bad_length in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="context_length"):
            token_windows(torch.arange(10), bad_length)
    with pytest.raises(ValueError, match="1-D"):
        token_windows(torch.arange(10).view(2, 5), 2)
