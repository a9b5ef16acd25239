from django.urls import path

from frontend import views

urlpatterns = [
    path("", views.experiment_list, name="experiment_list"),
    path("new/", views.new_experiment, name="new_experiment"),
    path("e/<int:experiment_id>/", views.experiment_detail, name="experiment_detail"),
    path("e/<int:experiment_id>/result/", views.experiment_result_fragment, name="experiment_result_fragment"),
    path("e/<int:experiment_id>/state.json", views.experiment_state, name="experiment_state"),
    path("e/<int:experiment_id>/results.json", views.results_download, name="results_download"),
    path("e/<int:experiment_id>/masks/<int:round_index>/", views.mask_data, name="mask_data"),
    path("e/<int:experiment_id>/cancel/", views.cancel_experiment, name="cancel_experiment"),
    path("e/<int:experiment_id>/analyses/", views.analyses_fragment, name="analyses_fragment"),
    path("e/<int:experiment_id>/analyses.json", views.analyses_state, name="analyses_state"),
    path("e/<int:experiment_id>/analyses/<str:name>/", views.run_analysis, name="run_analysis"),
    path("e/<int:experiment_id>/analyses/runs/<int:analysis_run_id>/cancel/", views.cancel_analysis,
         name="cancel_analysis"),
]
