from django.urls import include, path

urlpatterns = [
    path("", include("frontend.urls")),
]

handler400 = "frontend.views.bad_request"
handler404 = "frontend.views.not_found"
handler500 = "frontend.views.server_error"
