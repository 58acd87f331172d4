"""Every route's Operation, declared once: its span name, permission and whether it is paid."""

from typing import Annotated

from fastapi import Depends

from bff.pipeline.admission import Operation
from bff.pipeline.call import Call
from bff.policy.model import Permission

CHAT = Operation("chat", Permission.chat, paid=True)
IMAGES = Operation("images", Permission.images, paid=True)
IMAGE_JOBS = Operation(None, Permission.images)  # following a job: no new span, no charge
MODELS_READ = Operation("models", Permission.chat)
MODELS_MANAGE = Operation("models", Permission.models_manage)
CALLER = Operation(None)  # any authenticated caller; the route decides (model lists, usage)

ChatCall = Annotated[Call, Depends(CHAT)]
ImagesCall = Annotated[Call, Depends(IMAGES)]
ImageJobsCall = Annotated[Call, Depends(IMAGE_JOBS)]
ModelsReadCall = Annotated[Call, Depends(MODELS_READ)]
ModelsManageCall = Annotated[Call, Depends(MODELS_MANAGE)]
CallerCall = Annotated[Call, Depends(CALLER)]
