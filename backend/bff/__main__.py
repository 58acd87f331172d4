"""`python -m bff` / `llm-bff`: the BFF under uvicorn, in BFF_WORKERS worker processes (default 1)."""

import logging

import uvicorn

from bff.app import create_app
from bff.serving import uvicorn_options
from bff.settings import Settings


def main() -> None:
    settings = Settings()  # read from the environment; its validator refuses workers without shared state
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = uvicorn_options(settings)
    if settings.bff_workers > 1:
        # Each worker process imports the factory and builds its app (and its Services) from the
        # same environment: an app object cannot be shared across processes.
        uvicorn.run("bff.app:create_app", factory=True, workers=settings.bff_workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)


if __name__ == "__main__":
    main()
