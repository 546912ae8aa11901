"""A minimal Django project in one module, served through django.core.asgi."""
import django
from django.conf import settings
settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="x",
                   MIDDLEWARE=[])
django.setup()
from django.http import JsonResponse, HttpResponse
from django.urls import path
from django.core.asgi import get_asgi_application

def hello(request):
    return JsonResponse({"hello": "django", "method": request.method, "q": request.GET.get("q")})

def echo(request):
    return HttpResponse(request.body, content_type="application/octet-stream")

urlpatterns = [path("", hello), path("echo", echo)]
application = get_asgi_application()
