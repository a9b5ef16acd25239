from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),  # accounts: a superuser adds the lab's users here
    path("", include("frontend.urls")),
]

handler400 = "frontend.views.bad_request"
handler403 = "frontend.views.forbidden"
handler404 = "frontend.views.not_found"
handler500 = "frontend.views.server_error"
