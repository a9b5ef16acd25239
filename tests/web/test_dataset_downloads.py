"""The datasets panel's Download button: admins only, POST only, a downloadable dataset only; it queues the
download (eagerly here) from the mirror setting, and the panel shows the download's state."""
import pytest

from tests.trainer.dataset_files import serve_folder, write_mirror
from trainer import dataset_sources, downloads
from trainer.datasets import DATASETS

PANEL = "/new/?preset=quick_demo"  # a preset on the synthetic set: the page opens whatever else is installed


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    sources, _ = write_mirror(root)
    with serve_folder(root) as (base, requested):
        yield base, sources, requested


@pytest.fixture
def data_dir(settings, tmp_path, mirror, monkeypatch):
    base, sources, _ = mirror
    settings.LOTTERYWEB_DATA_DIR = str(tmp_path)
    settings.LOTTERYWEB_DATASET_MIRROR = base
    monkeypatch.setattr(dataset_sources, "SOURCES", sources)
    return tmp_path


@pytest.fixture
def admin_client(client, user):
    user.is_staff = True
    user.save()
    return client


def test_an_admin_downloads_through_the_mirror_and_the_panel_shows_it_installed(admin_client, data_dir, mirror):
    panel = admin_client.get(PANEL).content.decode()
    assert 'form="download-mnist"' in panel and 'action="/datasets/mnist/download/"' in panel
    before = len(mirror[2])

    response = admin_client.post("/datasets/mnist/download/")

    assert response.status_code == 302 and response["Location"] == "/new/#field-dataset"
    assert [path for path in mirror[2][before:]] == [f"/mnist/{f.name}" for f in mirror[1]["mnist"].files]
    assert DATASETS["mnist"].is_installed(data_dir)
    assert downloads.read_status("mnist", data_dir)["state"] == downloads.FINISHED
    panel = admin_client.get(PANEL).content.decode()
    assert 'form="download-mnist"' not in panel and f"installed ({data_dir / 'MNIST' / 'raw'})" in panel
    assert 'form="download-cifar10"' in panel


def test_a_failed_download_is_shown_on_the_panel_with_its_reason(admin_client, data_dir, settings):
    settings.LOTTERYWEB_DATASET_MIRROR = settings.LOTTERYWEB_DATASET_MIRROR + "/missing"
    admin_client.post("/datasets/svhn/download/")
    panel = admin_client.get(PANEL).content.decode()
    assert 'data-state="failed"' in panel and "HTTP 404" in panel and "/missing/svhn/train_32x32.mat" in panel
    assert 'form="download-svhn"' in panel, "the button is there again to retry"


def test_a_queued_or_running_download_shows_its_progress_instead_of_the_button(admin_client, data_dir):
    downloads.write_status("cifar100", data_dir, downloads.RUNNING, "fetching cifar-100-python.tar.gz",
                           file="cifar-100-python.tar.gz", bytes=50, total=200)
    downloads.write_status("cifar10", data_dir, downloads.QUEUED, "waiting for a worker")
    panel = admin_client.get(PANEL).content.decode()
    assert "download running (25%): fetching cifar-100-python.tar.gz" in panel
    assert "download queued: waiting for a worker" in panel
    assert 'form="download-cifar100"' not in panel and 'form="download-cifar10"' not in panel


def test_only_admins_see_and_press_the_button(client, data_dir, mirror):
    assert "Download</button>" not in client.get(PANEL).content.decode()
    before = len(mirror[2])
    response = client.post("/datasets/mnist/download/")
    assert response.status_code == 403 and "admin" in response.content.decode()
    assert len(mirror[2]) == before and downloads.read_status("mnist", data_dir) is None


def test_signed_out_visitors_are_sent_to_sign_in(anonymous_client, data_dir):
    response = anonymous_client.post("/datasets/mnist/download/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.parametrize("name", ["imagenet", "synthetic", "wikitext2"])
def test_an_unknown_or_not_downloadable_dataset_is_404(admin_client, data_dir, name):
    assert admin_client.post(f"/datasets/{name}/download/").status_code == 404


def test_get_is_405(admin_client, data_dir):
    assert admin_client.get("/datasets/mnist/download/").status_code == 405


def test_superusers_are_admins_too(django_user_model, data_dir):
    from django.test import Client

    root = Client()
    root.force_login(django_user_model.objects.create_superuser("root", password="root-password-1"))
    assert 'form="download-svhn"' in root.get(PANEL).content.decode()
