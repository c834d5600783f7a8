# onss-relay in a container beside an HR system: outbox/inbox on volumes, config and secrets as files.
#   docker build -t onss-relay .
#   docker run -v relay-spool:/var/lib/onss-relay -v ./config:/etc/onss-relay:ro onss-relay
# Every setting can be overridden with ONSS_RELAY__SECTION__KEY environment variables; secrets (key
# passwords, SSH passphrase) are read from files, e.g. Docker/Compose secrets under /run/secrets.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY onss_relay ./onss_relay
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 onss-relay \
 && useradd --system --uid 10001 --gid onss-relay --home-dir /var/lib/onss-relay --shell /usr/sbin/nologin onss-relay \
 && mkdir -p /var/lib/onss-relay /etc/onss-relay \
 && chown onss-relay:onss-relay /var/lib/onss-relay
COPY --from=build /install /usr/local
ENV ONSS_RELAY_CONFIG=/etc/onss-relay/config.toml \
    ONSS_RELAY__PATHS__ROOT=/var/lib/onss-relay \
    PYTHONUNBUFFERED=1
USER onss-relay:onss-relay
WORKDIR /var/lib/onss-relay
VOLUME ["/var/lib/onss-relay", "/etc/onss-relay"]
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s --retries=3 \
    CMD ["onss-relay", "status", "--health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["onss-relay"]
CMD ["run"]
