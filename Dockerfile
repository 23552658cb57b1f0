# livehub in a container: `docker build -t livehub .` then
#   docker run -p 8000:8000 -e CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY=... -e CENTRIFUGO_HTTP_API_KEY=... livehub
# Configure it with CENTRIFUGO_* / LIVEHUB_* variables or a config file mounted at /etc/livehub/
# (then: livehub serve --host 0.0.0.0 --config /etc/livehub/config.json). See examples/docker-compose.yml.

# -- build: the wheel, with the demo pages' SDK bundle built by frontend/build.sh (Node.js only here)
FROM python:3.12-slim-bookworm AS build
RUN apt-get update -q && apt-get install -y -q --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && python -c "import glob, zipfile; n = zipfile.ZipFile(glob.glob('/dist/*.whl')[0]).namelist(); \
assert 'livehub/demos/static/vendor/centrifuge.js' in n, 'the wheel has no SDK bundle'"

# -- runtime: the wheel and its Redis/NATS clients, no compiler, no Node.js, not root
FROM python:3.12-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin livehub
COPY --from=build /dist /dist
RUN whl="$(ls /dist/*.whl)" && pip install --no-cache-dir "${whl}[redis,nats]" && rm -rf /dist
USER livehub
EXPOSE 8000
# liveness; readiness (the engine answers) is GET /health/ready
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
ENTRYPOINT ["livehub"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
