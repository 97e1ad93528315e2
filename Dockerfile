# engagement-stream worker image.
#   docker build -t engagement-stream .
#   docker run --rm engagement-stream worker        (settings: STREAM_* environment variables)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY stream ./stream
RUN pip install . \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin stream

USER 10001
EXPOSE 9464
ENTRYPOINT ["engagement-stream"]
CMD ["worker"]
