# One image for every userdest process: the receiver, the workers, the migration step and the CLI.
# compose.yaml and deploy/kubernetes pick the process by its command; alone it serves the receiver
# on port 8000. `make image` builds it as userdest:<version>, with the labels below filled in.

# The base, pinned by digest so that a rebuild of the same release gets the same system. To move to
# a newer python:3.11-slim: `docker buildx imagetools inspect python:3.11-slim` gives the digest.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
FROM ${PYTHON_IMAGE}

ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="userdest" \
      org.opencontainers.image.description="A User.com-style CRM ingestion service for Segment calls" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="python:3.11-slim"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, from the lock alone, so a code or docs change does not reinstall them:
# exactly the files constraints.txt names, each checked against its sha256 (`make lock` writes it;
# `make install` installs the same files, so the tests ran with these packages).
COPY pyproject.toml constraints.txt ./
RUN pip install --require-hashes --no-deps -r constraints.txt

# The project, installed (not run from the source tree) so the image proves the packaging: the
# `userdest` console script and the migrations shipped as package data.
COPY README.md ./
COPY api ./api
COPY readapi ./readapi
COPY workers ./workers
COPY shared ./shared
COPY ops ./ops
RUN pip install --no-deps . \
    && pip check \
    && rm -rf /src \
    && useradd --system --user-group --uid 10001 --create-home --home-dir /home/userdest \
       --shell /usr/sbin/nologin userdest

USER userdest
WORKDIR /home/userdest
EXPOSE 8000
CMD ["gunicorn", "--config", "python:api.gunicorn_conf", "api:create_app()", "--bind", "0.0.0.0:8000"]
