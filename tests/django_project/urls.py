from asgiref.sync import sync_to_async
from django.contrib import admin
from django.contrib.auth import authenticate, login, logout
from django.db import transaction
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from tests.django_project.shop.models import Order


@csrf_exempt
def pay(request, pk):
    order = Order.objects.get(pk=pk)
    order.status = "paid"
    order.save()
    return HttpResponse("ok")


@csrf_exempt
async def apay(request, pk):
    order = await Order.objects.aget(pk=pk)
    order.status = "paid"
    await order.asave()
    return HttpResponse("ok")


def set_status(pk, status):
    order = Order.objects.get(pk=pk)
    order.status = status
    order.save()


@csrf_exempt
async def apay_threads(request, pk):  # sync ORM code from an async view, on Django's thread and on another one
    await sync_to_async(set_status)(pk, "thread_sensitive")
    await sync_to_async(set_status, thread_sensitive=False)(pk, "thread_pool")
    await Order.objects.filter(pk=pk).aupdate(total=7)
    return HttpResponse("ok")


def stream(request, pk):  # the body is produced after the middleware returned: outside its binding
    def body():
        yield b"start "
        set_status(pk, "streamed")
        yield b"done"
    return StreamingHttpResponse(body())


@csrf_exempt
def sign_in(request):
    user = authenticate(request, username=request.POST["username"], password=request.POST["password"])
    if user is None:
        return HttpResponse("no", status=401)
    login(request, user)
    order = Order.objects.get(pk=int(request.POST["order"]))
    order.status = "logged_in_change"
    order.save()
    return HttpResponse("ok")


@csrf_exempt
def sign_out(request):
    logout(request)
    return HttpResponse("bye")


@csrf_exempt
def pay_then_fail(request, pk):  # no atomic block of its own: ATOMIC_REQUESTS decides
    order = Order.objects.get(pk=pk)
    order.status = "paid_then_failed"
    order.save()
    raise RuntimeError("boom after the change")


@csrf_exempt
def failing(request, pk):
    with transaction.atomic():
        order = Order.objects.get(pk=pk)
        order.status = "never"
        order.save()
        raise RuntimeError("boom")


def whoami(request):
    return JsonResponse({"user": request.user.pk})


urlpatterns = [
    path("pay/<int:pk>", pay),
    path("apay/<int:pk>", apay),
    path("apay_threads/<int:pk>", apay_threads),
    path("stream/<int:pk>", stream),
    path("login", sign_in),
    path("logout", sign_out),
    path("failing/<int:pk>", failing),
    path("pay_then_fail/<int:pk>", pay_then_fail),
    path("whoami", whoami),
    path("admin/", admin.site.urls),
]
