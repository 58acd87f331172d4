"""`python -m bff` / `llm-bff`: one uvicorn worker serving the BFF."""

import logging

import uvicorn

from bff.app import create_app
from bff.settings import Settings


def main() -> None:
    settings = Settings()  # read from the environment
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.bff_host,
        port=settings.bff_port,
        access_log=False,  # the BFF writes its own structured access log
        log_level=settings.log_level.lower(),
        # Behind Kong the BFF is /gateway/*, stripped: URLs it hands out (images, docs) carry the prefix.
        root_path=settings.public_path_prefix,
        # X-Forwarded-Proto/-For are trusted from FORWARDED_ALLOW_IPS (uvicorn's setting; compose: Kong).
        proxy_headers=True,
        timeout_keep_alive=settings.bff_keepalive_seconds,
    )


if __name__ == "__main__":
    main()
