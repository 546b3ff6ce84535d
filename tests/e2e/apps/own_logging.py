"""A FastAPI app that sets up its own logging at import, as Django and many services do.

Its root handler writes ``APP <request_id> <logger> <file>:<line> <message>`` lines to the
file named by ``APP_LOG_FILE``, with Nessen's request id filter.
"""

from __future__ import annotations

import logging
import logging.config
import os

from fastapi import FastAPI

logging.config.dictConfig(
    {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "nessen.observability.logs.RequestIdFilter"}},
        "formatters": {
            "app": {"format": "APP %(request_id)s %(name)s %(filename)s:%(lineno)d %(message)s"}
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": os.environ["APP_LOG_FILE"],
                "formatter": "app",
                "filters": ["request_id"],
            }
        },
        "root": {"level": "INFO", "handlers": ["file"]},
    }
)
logger = logging.getLogger("shop.orders")

app = FastAPI()


@app.get("/order/{number}")
async def order(number: int) -> dict[str, int]:
    logger.info("order %d looked up", number, extra={"order": number})
    return {"order": number}
