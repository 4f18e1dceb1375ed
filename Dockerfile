# One image for every userdest process: the receiver, the workers, the migration step and the CLI.
# compose.yaml picks the process by its command; alone it serves the receiver on port 8000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them: the
# packages are empty stand-ins here and the project itself is installed over them below. Their
# versions are the ones constraints.txt pins (`make lock` writes it), so every build gets the
# packages the tests ran with.
COPY pyproject.toml README.md constraints.txt ./
RUN mkdir -p api workers shared \
    && touch api/__init__.py workers/__init__.py shared/__init__.py \
    && pip install --constraint constraints.txt . \
    && pip uninstall --yes userdest \
    && rm -rf api workers shared build *.egg-info

# The project, installed (not run from the source tree) so the image proves the packaging: the
# `userdest` console script and the migrations shipped as package data.
COPY api ./api
COPY workers ./workers
COPY shared ./shared
COPY ops ./ops
RUN pip install --no-deps . \
    && rm -rf /src \
    && useradd --system --user-group --uid 10001 --create-home --home-dir /home/userdest \
       --shell /usr/sbin/nologin userdest

USER userdest
WORKDIR /home/userdest
EXPOSE 8000
CMD ["gunicorn", "--config", "python:api.gunicorn_conf", "api:create_app()", "--bind", "0.0.0.0:8000"]
