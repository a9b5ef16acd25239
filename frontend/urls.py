from django.contrib.auth import views as auth_views
from django.urls import include, path

from frontend import api, sweep_views, views

# The read-only views of one experiment, under /e/<id>/ (signed in) and /s/<share token>/ (public link).
experiment_read_patterns = [
    path("", views.experiment_detail, name="experiment_detail"),
    path("result/", views.experiment_result_fragment, name="experiment_result_fragment"),
    path("state.json", views.experiment_state, name="experiment_state"),
    path("results.json", views.results_download, name="results_download"),
    path("masks/<int:round_index>/", views.mask_data, name="mask_data"),
    path("export/metrics.csv", views.export_csv, {"what": "metrics"}, name="export_metrics"),
    path("export/curves.csv", views.export_csv, {"what": "curves"}, name="export_curves"),
    path("export/ticket/<int:round_index>.pt", views.export_ticket, name="export_ticket"),
    path("analyses/", views.analyses_fragment, name="analyses_fragment"),
    path("analyses.json", views.analyses_state, name="analyses_state"),
]
shared_read_patterns = [
    path(route.pattern._route, route.callback, route.default_args, name=f"shared_{route.name}")
    for route in experiment_read_patterns
]

urlpatterns = [
    path("", views.experiment_list, name="experiment_list"),
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("new/", views.new_experiment, name="new_experiment"),
    path("new/upload/", views.upload_spec, name="upload_spec"),
    path("datasets/<str:name>/download/", views.download_dataset, name="download_dataset"),
    path("compare/", views.compare, name="compare"),
    path("e/<int:experiment_id>/", include(experiment_read_patterns)),
    path("e/<int:experiment_id>/cancel/", views.cancel_experiment, name="cancel_experiment"),
    path("e/<int:experiment_id>/delete/", views.delete_experiment, name="delete_experiment"),
    path("e/<int:experiment_id>/requeue/", views.requeue_experiment, name="requeue_experiment"),
    path("e/<int:experiment_id>/visibility/", views.set_visibility, name="set_visibility"),
    path("e/<int:experiment_id>/labels/", views.edit_labels, name="edit_labels"),
    path("e/<int:experiment_id>/analyses/<str:name>/", views.run_analysis, name="run_analysis"),
    path("e/<int:experiment_id>/analyses/runs/<int:analysis_run_id>/cancel/", views.cancel_analysis,
         name="cancel_analysis"),
    path("s/<str:token>/", include(shared_read_patterns)),
    path("reproductions/", views.reproductions_page, name="reproductions"),
    path("reproductions/section/", views.reproductions_fragment, name="reproductions_fragment"),
    path("reproductions/state.json", views.reproductions_state, name="reproductions_state"),
    path("reproductions/run-all/", views.run_all_reproductions, name="run_all_reproductions"),
    path("reproductions/run/<str:name>/", views.run_reproduction, name="run_reproduction"),
    path("reproductions/runs/<int:run_id>/cancel/", views.cancel_reproduction, name="cancel_reproduction"),
    path("sweeps/", sweep_views.sweep_list, name="sweep_list"),
    path("sweeps/new/", sweep_views.new_sweep, name="new_sweep"),
    path("sweeps/<int:sweep_id>/", sweep_views.sweep_detail, name="sweep_detail"),
    path("sweeps/<int:sweep_id>/section/", sweep_views.sweep_section, name="sweep_section"),
    path("sweeps/<int:sweep_id>/state.json", sweep_views.sweep_state, name="sweep_state"),
    path("sweeps/<int:sweep_id>/cancel/", sweep_views.cancel_sweep, name="cancel_sweep"),
    path("sweeps/<int:sweep_id>/export/<str:what>.csv", sweep_views.export_sweep_csv, name="export_sweep_csv"),
    path("account/token/", views.api_tokens, name="api_tokens"),
    path("api/experiments/", api.experiments, name="api_experiments"),
    path("api/experiments/<int:experiment_id>/", api.experiment_detail, name="api_experiment"),
    path("api/experiments/<int:experiment_id>/cancel/", api.experiment_cancel, name="api_experiment_cancel"),
    path("api/experiments/<int:experiment_id>/results/", api.experiment_results, name="api_experiment_results"),
    path("api/sweeps/", api.sweeps, name="api_sweeps"),
    path("api/sweeps/<int:sweep_id>/", api.sweep_detail, name="api_sweep"),
    path("api/sweeps/<int:sweep_id>/cancel/", api.sweep_cancel, name="api_sweep_cancel"),
]
