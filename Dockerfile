# onss-relay in a container beside an HR system: outbox/inbox on volumes, config and secrets as files.
#   docker build -t onss-relay .                      (Podman: podman build --format docker -t onss-relay .)
#   docker run -v relay-spool:/var/lib/onss-relay -v ./config:/etc/onss-relay:ro onss-relay
# Every setting can be overridden with ONSS_RELAY__SECTION__KEY environment variables; secrets (key
# passwords, SSH passphrase) are read from files, e.g. Docker/Compose secrets under /run/secrets.
# The relay runs as uid/gid 10001: the config folder it mounts must be readable by that uid
# (`chown -R 10001:10001 config`), a shared exchange folder writable by it. /exchange exists owned by
# 10001, so that a named volume mounted there (docker-compose.example.yml) is created owned by 10001.
#
# BASE: any Debian-like image with python3 (3.11+) and its venv module. The default is the official
# Python image; CI builds on a Debian bookworm made with debootstrap (python3, python3-venv).
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
# PIP_OPTIONS: e.g. "--no-index --find-links /src/wheels" to install from wheels put in the build context
# (wheels/) instead of PyPI: what CI does, and what a machine without PyPI access can do
ARG PIP_OPTIONS=""
# EXTRAS: e.g. "postgres-binary" for the PostgreSQL journal in an image without libpq (High availability)
ARG EXTRAS=""
WORKDIR /src
COPY . .
# a venv, not `pip install --prefix`: Debian's Python puts a prefix install in another folder than
# /usr/local, and the venv keeps the relay and its libraries apart from the system's
RUN python3 -m venv /opt/onss-relay \
 && /opt/onss-relay/bin/pip install --no-cache-dir --disable-pip-version-check -q $PIP_OPTIONS ".${EXTRAS:+[$EXTRAS]}" \
 && /opt/onss-relay/bin/onss-relay --version

FROM ${BASE}
RUN groupadd --system --gid 10001 onss-relay \
 && useradd --system --uid 10001 --gid onss-relay --home-dir /var/lib/onss-relay --shell /usr/sbin/nologin onss-relay \
 && mkdir -p /var/lib/onss-relay /etc/onss-relay /exchange \
 && chown onss-relay:onss-relay /var/lib/onss-relay /exchange \
 && chmod 0750 /var/lib/onss-relay
COPY --from=build /opt/onss-relay /opt/onss-relay
ENV PATH=/opt/onss-relay/bin:$PATH \
    ONSS_RELAY_CONFIG=/etc/onss-relay/config.toml \
    ONSS_RELAY__PATHS__ROOT=/var/lib/onss-relay \
    PYTHONUNBUFFERED=1
USER onss-relay:onss-relay
WORKDIR /var/lib/onss-relay
VOLUME ["/var/lib/onss-relay"]
# kept by `docker build`; Podman keeps it with `--format docker` (the OCI format has no HEALTHCHECK)
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s --retries=3 \
    CMD ["onss-relay", "status", "--health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["onss-relay"]
CMD ["run"]
