"""Every route's Operation, declared once: its span name, permission and whether it is paid.

The LLM operations (chat, embeddings, audio, ...) are declared with their forwarding in
pipeline/llm_operations.py; the others here.
"""

from typing import Annotated

from fastapi import Depends

from bff.pipeline import llm_operations as llm
from bff.pipeline.admission import Operation
from bff.pipeline.call import Call
from bff.policy.model import Permission

IMAGES = Operation("images", Permission.images, paid=True)  # ComfyUI workflows
IMAGE_JOBS = Operation(None, Permission.images)  # following a job: no new span, no charge
MODELS_READ = Operation("models", Permission.chat)
MODELS_MANAGE = Operation("models", Permission.models_manage)
CALLER = Operation(None)  # any authenticated caller; the route decides (model lists, usage)

ChatCall = Annotated[Call, Depends(llm.CHAT)]
CompletionsCall = Annotated[Call, Depends(llm.COMPLETIONS)]
ResponsesCall = Annotated[Call, Depends(llm.RESPONSES)]
EmbeddingsCall = Annotated[Call, Depends(llm.EMBEDDINGS)]
RerankCall = Annotated[Call, Depends(llm.RERANK)]
ModerationsCall = Annotated[Call, Depends(llm.MODERATIONS)]
SpeechCall = Annotated[Call, Depends(llm.SPEECH)]
TranscriptionCall = Annotated[Call, Depends(llm.TRANSCRIPTION)]
ImageEditCall = Annotated[Call, Depends(llm.IMAGE_EDIT)]
ImagesCall = Annotated[Call, Depends(IMAGES)]
ImageJobsCall = Annotated[Call, Depends(IMAGE_JOBS)]
ModelsReadCall = Annotated[Call, Depends(MODELS_READ)]
ModelsManageCall = Annotated[Call, Depends(MODELS_MANAGE)]
CallerCall = Annotated[Call, Depends(CALLER)]
